//! Relay pagination: edges of the page window, cursors, and argument checks.

use serde_json::{Value, json};

use crate::helpers::{TestApp, bulk, first_code, new_admin};

const PAGE: &str = "query($first: Int, $after: String) { posts(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } } } }";

fn ids(conn: &Value) -> Vec<i64> {
    conn["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walking_pages_visits_every_post_once() {
    let app = TestApp::spawn().await;
    let mut all = bulk(&app.store, 7, 0).await;
    all.reverse(); // newest first

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let body = app.gql(PAGE, json!({ "first": 3, "after": after })).await;
        let conn = &body["data"]["posts"];
        assert_eq!(conn["totalCount"], 7);
        assert_eq!(conn["pageInfo"]["hasPreviousPage"], json!(after.is_some()));
        let page = ids(conn);
        let edges = conn["edges"].as_array().unwrap();
        assert_eq!(conn["pageInfo"]["startCursor"], edges[0]["cursor"]);
        assert_eq!(
            conn["pageInfo"]["endCursor"],
            edges[edges.len() - 1]["cursor"]
        );
        seen.extend(page);
        pages += 1;
        if conn["pageInfo"]["hasNextPage"] == json!(false) {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
        assert!(pages < 10, "pagination does not terminate");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_zero_exact_last_page_and_past_the_end() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 4, 0).await;

    // first: 0 → no edges, but it still says whether there is anything.
    let body = app.gql(PAGE, json!({ "first": 0 })).await;
    let conn = &body["data"]["posts"];
    assert_eq!(conn["edges"], json!([]));
    assert_eq!(conn["pageInfo"]["hasNextPage"], true);
    assert_eq!(conn["pageInfo"]["startCursor"], json!(null));
    assert_eq!(conn["pageInfo"]["endCursor"], json!(null));

    // Exactly the whole list: no next page.
    let body = app.gql(PAGE, json!({ "first": 4 })).await;
    let conn = &body["data"]["posts"];
    assert_eq!(ids(conn).len(), 4);
    assert_eq!(conn["pageInfo"]["hasNextPage"], false);
    let end = conn["pageInfo"]["endCursor"].as_str().unwrap().to_owned();

    // After the last item: empty page, no error.
    let body = app.gql(PAGE, json!({ "first": 4, "after": end })).await;
    assert!(body.get("errors").is_none(), "{body}");
    let conn = &body["data"]["posts"];
    assert_eq!(conn["edges"], json!([]));
    assert_eq!(conn["pageInfo"]["hasNextPage"], false);
    assert_eq!(conn["pageInfo"]["endCursor"], json!(null));

    // An exact last page in the middle of a walk.
    let body = app.gql(PAGE, json!({ "first": 2 })).await;
    let after = body["data"]["posts"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = app.gql(PAGE, json!({ "first": 2, "after": after })).await;
    assert_eq!(ids(&body["data"]["posts"]).len(), 2);
    assert_eq!(body["data"]["posts"]["pageInfo"]["hasNextPage"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_first_and_bad_cursors_are_bad_user_input() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 2, 1).await;
    for vars in [
        json!({ "first": -1 }),
        json!({ "first": 101 }),
        json!({ "first": 5, "after": "not-a-cursor" }),
        json!({ "first": 5, "after": "" }),
        json!({ "first": 5, "after": "djE6eA" }), // "v1:x"
    ] {
        let body = app.gql(PAGE, vars.clone()).await;
        assert_eq!(first_code(&body), "BAD_USER_INPUT", "{vars}: {body}");
        assert_eq!(body["data"], json!(null), "{body}");
    }
    // Nested connections and the users list check their arguments the same way.
    let body = app
        .gql(
            "{ posts { edges { node { comments(first: 1000) { totalCount } } } } }",
            json!({}),
        )
        .await;
    assert_eq!(first_code(&body), "BAD_USER_INPUT", "{body}");
    let token = new_admin(&app.store).await;
    let body = app
        .gql_as(
            Some(&token),
            "{ users(after: \"zzz\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(first_code(&body), "BAD_USER_INPUT", "{body}");
    // The upper bound itself is fine.
    let body = app.gql(PAGE, json!({ "first": 100 })).await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_comment_pages_continue_from_their_cursor() {
    let app = TestApp::spawn().await;
    let posts = bulk(&app.store, 2, 5).await;
    let q = "query($id: ID!, $after: String) { post(id: $id) { comments(first: 2, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { body } } } } }";
    let mut after: Option<String> = None;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let body = app
            .gql(q, json!({ "id": posts[0].to_string(), "after": after }))
            .await;
        let conn = &body["data"]["post"]["comments"];
        assert_eq!(conn["totalCount"], 5);
        for e in conn["edges"].as_array().unwrap() {
            bodies.push(e["node"]["body"].as_str().unwrap().to_owned());
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        bodies,
        [
            "comment 0",
            "comment 1",
            "comment 2",
            "comment 3",
            "comment 4"
        ]
    );
}
