//! Every field of the read API, lookups by id, filters and search.

use serde_json::json;

use crate::helpers::{Fixture, TestApp, admin_token, first_code, token_for};

const POST_FIELDS: &str = "id title content published publishedAt createdAt updatedAt commentCount
    author { id name email role plan createdAt }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_by_id_returns_every_field() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let q = format!(
        "query($id: ID!) {{ post(id: $id) {{ {POST_FIELDS}
            comments(first: 10) {{ totalCount edges {{ cursor node {{ id body createdAt author {{ name }} post {{ id title }} }} }} }} }} }}"
    );
    // As Alice, who may see her own email and plan.
    let alice = token_for(f.alice);
    let body = app
        .gql_as(
            Some(&alice),
            &q,
            json!({ "id": f.alice_posts[0].to_string() }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let post = &body["data"]["post"];
    assert_eq!(post["id"], f.alice_posts[0].to_string());
    assert_eq!(post["title"], "Ownership in Rust");
    assert_eq!(post["content"], "Borrowing rules explained with diagrams.");
    assert_eq!(post["published"], true);
    assert_eq!(post["publishedAt"], "2026-01-01T00:10:00+00:00");
    assert_eq!(post["createdAt"], "2026-01-01T00:10:00+00:00");
    assert_eq!(post["updatedAt"], "2026-01-01T00:10:00+00:00");
    assert_eq!(post["commentCount"], 3);
    assert_eq!(post["author"]["id"], f.alice.to_string());
    assert_eq!(post["author"]["name"], "Alice Liddell");
    assert_eq!(post["author"]["email"], "alice@example.com");
    assert_eq!(post["author"]["role"], "USER");
    assert_eq!(post["author"]["plan"], "FREE");
    assert_eq!(post["author"]["createdAt"], "2026-01-01T00:00:00+00:00");
    let comments = &post["comments"];
    assert_eq!(comments["totalCount"], 3);
    let bodies: Vec<&str> = comments["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap())
        .collect();
    assert_eq!(
        bodies,
        ["Great explanation!", "The diagrams helped.", "Thanks both."],
        "oldest first"
    );
    let first = &comments["edges"][0]["node"];
    assert_eq!(first["author"]["name"], "Bob Marley");
    assert_eq!(first["post"]["title"], "Ownership in Rust");
    assert_eq!(first["createdAt"], "2026-01-01T00:20:00+00:00");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ids_are_null_and_malformed_ids_are_bad_input() {
    let app = TestApp::spawn().await;
    Fixture::create(&app.store).await;
    let body = app
        .gql(
            "{ post(id: \"999999\") { id } user(id: \"999999\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(body["data"]["post"], json!(null));
    assert_eq!(body["data"]["user"], json!(null));
    assert!(body.get("errors").is_none(), "{body}");

    for q in [
        "{ post(id: \"abc\") { id } }",
        "{ user(id: \"1.5\") { id } }",
        "{ posts(filter: { authorId: \"x\" }) { totalCount } }",
    ] {
        let body = app.gql(q, json!({})).await;
        assert_eq!(first_code(&body), "BAD_USER_INPUT", "{q}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_fields_and_their_published_posts() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let body = app
        .gql(
            "query($id: ID!) { user(id: $id) { id name email role plan createdAt
                posts(first: 10) { totalCount edges { node { id title published } } } } }",
            json!({ "id": f.alice.to_string() }),
        )
        .await;
    let user = &body["data"]["user"];
    assert_eq!(user["name"], "Alice Liddell");
    assert_eq!(
        user["posts"]["totalCount"], 2,
        "the draft is not listed: {body}"
    );
    let ids: Vec<String> = user["posts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ids,
        [f.alice_posts[1].to_string(), f.alice_posts[0].to_string()],
        "newest first"
    );

    let body = app
        .gql(
            "query($id: ID!) { user(id: $id) { posts { totalCount edges { cursor } } } }",
            json!({ "id": f.carol.to_string() }),
        )
        .await;
    assert_eq!(
        body["data"]["user"]["posts"],
        json!({ "totalCount": 0, "edges": [] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_lists_published_posts_newest_first() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let body = app
        .gql(
            "{ posts { totalCount edges { node { id published } } } }",
            json!({}),
        )
        .await;
    let posts = &body["data"]["posts"];
    assert_eq!(posts["totalCount"], 4);
    let ids: Vec<String> = posts["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = [
        f.bob_posts[1],
        f.alice_posts[1],
        f.bob_posts[0],
        f.alice_posts[0],
    ]
    .iter()
    .map(|i| i.to_string())
    .collect();
    assert_eq!(ids, expected);
    assert!(!ids.contains(&f.alice_draft.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_filter_by_author_and_search() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let titles = |body: &serde_json::Value| -> Vec<String> {
        body["data"]["posts"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["title"].as_str().unwrap().to_owned())
            .collect()
    };
    let q = "query($f: PostFilter) { posts(filter: $f) { totalCount edges { node { title } } } }";

    let body = app
        .gql(q, json!({ "f": { "authorId": f.bob.to_string() } }))
        .await;
    assert_eq!(
        titles(&body),
        ["100% pure_joy of cooking", "Winter gardening"]
    );
    assert_eq!(body["data"]["posts"]["totalCount"], 2);

    // Title match, case-insensitively.
    let body = app.gql(q, json!({ "f": { "search": "RUST" } })).await;
    assert_eq!(
        titles(&body),
        ["Async Rust in practice", "Ownership in Rust"]
    );
    // Content match.
    let body = app.gql(q, json!({ "f": { "search": "kale" } })).await;
    assert_eq!(titles(&body), ["Winter gardening"]);
    // Drafts never match.
    let body = app.gql(q, json!({ "f": { "search": "secret" } })).await;
    assert_eq!(body["data"]["posts"]["totalCount"], 0);
    // LIKE wildcards in the term are literal.
    let body = app.gql(q, json!({ "f": { "search": "100%" } })).await;
    assert_eq!(titles(&body), ["100% pure_joy of cooking"]);
    let body = app.gql(q, json!({ "f": { "search": "_" } })).await;
    assert_eq!(
        titles(&body),
        ["100% pure_joy of cooking"],
        "`_` is not a wildcard"
    );
    let body = app.gql(q, json!({ "f": { "search": "%" } })).await;
    assert_eq!(titles(&body), ["100% pure_joy of cooking"]);
    // Author and search together.
    let body = app
        .gql(
            q,
            json!({ "f": { "search": "rust", "authorId": f.bob.to_string() } }),
        )
        .await;
    assert_eq!(body["data"]["posts"]["totalCount"], 0);
    // A blank term is no filter; an overlong one is refused.
    let body = app.gql(q, json!({ "f": { "search": "   " } })).await;
    assert_eq!(body["data"]["posts"]["totalCount"], 4);
    let body = app
        .gql(q, json!({ "f": { "search": "x".repeat(201) } }))
        .await;
    assert_eq!(first_code(&body), "BAD_USER_INPUT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_lists_everyone_by_id() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let token = admin_token(&app.store, f.carol).await;
    let body = app
        .gql_as(Some(&token), "{ users(first: 2) { totalCount pageInfo { hasNextPage } edges { node { id name } } } }", json!({}))
        .await;
    let users = &body["data"]["users"];
    assert_eq!(users["totalCount"], 3);
    assert_eq!(users["pageInfo"]["hasNextPage"], true);
    assert_eq!(users["edges"][0]["node"]["id"], f.alice.to_string());
    assert_eq!(users["edges"][1]["node"]["id"], f.bob.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn me_is_null_without_credentials() {
    let app = TestApp::spawn().await;
    let body = app.gql("{ me { id } }", json!({})).await;
    assert_eq!(body, json!({ "data": { "me": null } }));
}
