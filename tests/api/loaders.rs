//! N+1 is a bug: a request's statement count depends on its shape, not on how many items it returns.

use serde_json::json;

use crate::helpers::{TestApp, admin_token, bulk};

const REFERENCE: &str = "query($n: Int) { posts(first: $n) { edges { node {
    author { name } commentCount comments(first: 5) { edges { node { author { name } } } } } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_query_runs_at_most_five_statements_for_any_page_size() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 60, 7).await;
    let mut counts = Vec::new();
    for n in [5, 50] {
        let (body, statements) = app.statements_for(REFERENCE, json!({ "n": n })).await;
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
    // posts, their authors, comment counts, comment pages, comment authors: one statement each.
    assert_eq!(counts, [5, 5], "statements for 5 and for 50 posts");
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
