//! N+1 is a bug: a request's statement count depends on its shape, not on how many items it returns.

use serde_json::json;

use crate::helpers::{TestApp, admin_token, bulk};

const REFERENCE: &str = "query($n: Int) { posts(first: $n) { edges { node {
    author { name } commentCount comments(first: 5) { edges { node { author { name } } } } } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_query_runs_two_statements_for_any_page_size() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 60, 7).await;
    let mut counts = Vec::new();
    // Two copies of the document, so that both run on the executor (a repeated document runs compiled: see
    // `compiled.rs`).
    for (n, query) in [(5, REFERENCE.to_owned()), (50, format!("{REFERENCE} "))] {
        let (body, statements) = app.statements_for(&query, json!({ "n": n })).await;
        assert!(body.get("errors").is_none(), "{body}");
        let edges = body["data"]["posts"]["edges"].as_array().unwrap();
        assert_eq!(edges.len(), n as usize);
        for e in edges {
            assert_eq!(e["node"]["commentCount"], 7);
            assert_eq!(e["node"]["comments"]["edges"].as_array().unwrap().len(), 5);
            assert_eq!(e["node"]["author"]["name"], "Writer");
        }
        counts.push(statements);
    }
    // The page with its authors joined, then every post's comment page with counts and comment authors
    // (see `prefetch.rs`): two statements, whatever the page size.
    assert_eq!(counts, [2, 2], "statements for 5 and for 50 posts");
}

/// The posts of `body` under `data.posts.edges`, as (commentCount, comment bodies with authors) per post.
fn pages(body: &serde_json::Value, field: &str) -> Vec<(i64, Vec<String>)> {
    body["data"]["posts"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let node = &e["node"];
            let comments = node[field]["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| format!("{} by {}", c["node"]["body"], c["node"]["author"]["name"]))
                .collect();
            (node["commentCount"].as_i64().unwrap(), comments)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_pages_answer_what_the_loaders_answer() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 3, 3).await;
    // The newest post has no comments at all.
    bulk(&app.store, 1, 0).await;
    let prefetched = "{ posts(first: 4) { edges { node { commentCount
        comments(first: 2) { edges { node { body author { name } } } } } } } }";
    let (fast, statements) = app.statements_for(prefetched, json!({})).await;
    assert!(fast.get("errors").is_none(), "{fast}");
    assert_eq!(statements, 2);
    // Two different pages of comments: not one plan, so the loaders serve them, level by level.
    let mixed = "{ posts(first: 4) { edges { node { commentCount
        two: comments(first: 2) { edges { node { body author { name } } } }
        one: comments(first: 1) { edges { node { body author { name } } } } } } } }";
    let (slow, statements) = app.statements_for(mixed, json!({})).await;
    assert!(slow.get("errors").is_none(), "{slow}");
    assert!(statements > 2, "ran {statements} statements");
    let expected: Vec<(i64, Vec<String>)> = vec![
        (0, vec![]),
        (
            3,
            vec![
                "\"comment 0\" by \"Reader\"".into(),
                "\"comment 1\" by \"Reader\"".into(),
            ],
        ),
        (
            3,
            vec![
                "\"comment 0\" by \"Reader\"".into(),
                "\"comment 1\" by \"Reader\"".into(),
            ],
        ),
        (
            3,
            vec![
                "\"comment 0\" by \"Reader\"".into(),
                "\"comment 1\" by \"Reader\"".into(),
            ],
        ),
    ];
    assert_eq!(pages(&fast, "comments"), expected);
    assert_eq!(pages(&slow, "two"), expected);
    let firsts: Vec<usize> = pages(&slow, "one").iter().map(|p| p.1.len()).collect();
    assert_eq!(firsts, [0, 1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_with_its_comments_is_three_statements_and_a_cursor_keeps_the_full_count() {
    let app = TestApp::spawn().await;
    let ids = bulk(&app.store, 1, 3).await;
    let q = "query($id: ID!, $after: String) { post(id: $id) { title author { name } commentCount
        comments(first: 1, after: $after) { edges { cursor node { body author { name } } } } } }";
    let (first, statements) = app
        .statements_for(q, json!({ "id": ids[0].to_string() }))
        .await;
    assert!(first.get("errors").is_none(), "{first}");
    // The post by id, its author, and its comment page with the count and the comments' authors.
    assert_eq!(statements, 3);
    let post = &first["data"]["post"];
    assert_eq!(post["commentCount"], 3);
    assert_eq!(post["author"]["name"], "Writer");
    let edge = &post["comments"]["edges"][0];
    assert_eq!(edge["node"]["body"], "comment 0");
    assert_eq!(edge["node"]["author"]["name"], "Reader");
    // After a cursor the window sees fewer comments; the count must still be the post's.
    let after = edge["cursor"].as_str().unwrap();
    let next = app
        .gql(q, json!({ "id": ids[0].to_string(), "after": after }))
        .await;
    assert!(next.get("errors").is_none(), "{next}");
    assert_eq!(next["data"]["post"]["commentCount"], 3);
    assert_eq!(
        next["data"]["post"]["comments"]["edges"][0]["node"]["body"],
        "comment 1"
    );
    // Past the last comment the page is empty and the count still the post's.
    let mut after = after.to_owned();
    for _ in 0..2 {
        let page = app
            .gql(q, json!({ "id": ids[0].to_string(), "after": after }))
            .await;
        after = page["data"]["post"]["comments"]["edges"][0]["cursor"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let past = app
        .gql(q, json!({ "id": ids[0].to_string(), "after": after }))
        .await;
    assert!(past.get("errors").is_none(), "{past}");
    assert_eq!(past["data"]["post"]["commentCount"], 3);
    assert_eq!(past["data"]["post"]["comments"]["edges"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn total_count_is_counted_only_when_selected() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 3, 0).await;
    let (_, without) = app
        .statements_for("{ posts { edges { node { id } } } }", json!({}))
        .await;
    let (body, with) = app
        .statements_for("{ posts { totalCount edges { node { id } } } }", json!({}))
        .await;
    assert_eq!(body["data"]["posts"]["totalCount"], 3);
    assert_eq!(without, 1);
    assert_eq!(with, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_user_posts_and_comment_posts_are_batched() {
    let app = TestApp::spawn().await;
    let writer = bulk(&app.store, 20, 2).await;
    bulk(&app.store, 20, 2).await;
    let post = app.store.posts_by_ids(&writer[..1]).await.unwrap();
    // `users` is for admins: one of the writers gets the role.
    let token = admin_token(&app.store, post[0].author_id).await;
    // users → posts → comments → post → author: one statement per level, whatever the fan-out.
    let q = "{ users(first: 10) { edges { node { posts(first: 10) { totalCount edges { node {
        comments(first: 3) { edges { node { post { title } author { name } } } } } } } } } } }";
    let (body, statements) = app.statements_for_as(Some(&token), q, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    // The viewer, users, posts by author, post counts, comments by post, posts by id, users by id.
    assert!(statements <= 7, "ran {statements} statements");
    let total: i64 = body["data"]["users"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["node"]["posts"]["totalCount"].as_i64().unwrap())
        .sum();
    assert_eq!(total, 40);
}
