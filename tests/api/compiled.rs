//! Compiled operations (`graphql/compiled`): a repeated feed query answered from one statement must be the
//! executor's answer, must refuse what the executor refuses, and must purge like it.
//!
//! A document's first execution runs on the executor (which validates it) and compiles it; later ones run the
//! plan. So the executor's answer for a request is the answer to a copy of the document with one more space (a
//! document of its own), and `folio_graphql_compiled_total` tells which path answered.

use std::sync::atomic::{AtomicUsize, Ordering};

use folio::cache::CacheMode;
use folio::store::seed::{NewComment, NewPost, NewUser};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp, TestDb, bulk, test_config, token_for};

const COMPILED: &str = "folio_graphql_compiled_total";

/// An app without the response cache, so that a repeated request executes again.
async fn uncached_app() -> TestApp {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.cache.mode = CacheMode::Off;
    TestApp::spawn_with(db, config).await
}

/// The raw answer: status and body bytes.
async fn raw(app: &TestApp, query: &str, variables: &Value) -> (StatusCode, String) {
    let res = app
        .post_graphql_as(None, json!({ "query": query, "variables": variables }))
        .await;
    let status = res.status();
    (status, res.text().await.expect("body"))
}

/// Runs `query` on the executor and then compiled, and returns the compiled answer after checking that it is
/// the executor's.
async fn same_on_both(app: &TestApp, query: &str, variables: Value) -> String {
    let fresh = copy(query);
    let before = app.metric(COMPILED).await;
    let (status, executor) = raw(app, &fresh, &variables).await;
    assert_eq!(status, StatusCode::OK, "{executor}");
    assert!(!executor.contains("\"errors\""), "{executor}");
    let (status, compiled) = raw(app, &fresh, &variables).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        app.metric(COMPILED).await - before,
        1.0,
        "the second request should have run compiled: {query}"
    );
    // The same JSON. Not always the same bytes: the executor writes an object's fields in the order they
    // finish (async-graphql resolves them concurrently), a compiled operation in selection order.
    let parse = |body: &str| serde_json::from_str::<Value>(body).expect("JSON");
    assert_eq!(
        parse(&compiled),
        parse(&executor),
        "compiled and executor answers differ for {query}"
    );
    compiled
}

/// A copy of `query` that no request has sent yet (a comment makes it another document): its first execution
/// is the executor's.
fn copy(query: &str) -> String {
    static COPIES: AtomicUsize = AtomicUsize::new(0);
    format!("{query}\n# copy {}", COPIES.fetch_add(1, Ordering::Relaxed))
}

/// Posts with text that needs escaping, an admin author, a post without comments and one with more comments
/// than a page, on top of the shared fixture (which has a draft, and comments by several people).
async fn varied_data(app: &TestApp) {
    Fixture::create(&app.store).await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-02-01T10:20:30.123456Z")
        .expect("date")
        .with_timezone(&chrono::Utc);
    let users = app
        .store
        .insert_users(&[NewUser {
            email: "root@example.com".into(),
            name: "Ädmin \"Root\" \\ 🦀".into(),
            role: "ADMIN",
            plan: "PRO",
            created_at: at,
        }])
        .await
        .expect("users");
    let posts = app
        .store
        .insert_posts(&[
            NewPost {
                author_id: users[0],
                title: "Quotes \" backslash \\ tab \t newline \n bell \u{7} </script>".into(),
                content: "Ünïcödé — and a line\r\nbreak".into(),
                published: true,
                created_at: at,
            },
            NewPost {
                author_id: users[0],
                title: "Nobody commented".into(),
                content: String::new(),
                published: true,
                created_at: at,
            },
        ])
        .await
        .expect("posts");
    let comments: Vec<NewComment> = (0..7)
        .map(|i| NewComment {
            post_id: posts[0].0,
            author_id: users[0],
            body: format!("comment {i} \"quoted\""),
            created_at: at,
        })
        .collect();
    app.store
        .insert_comments(&comments)
        .await
        .expect("comments");
}

const REFERENCE: &str =
    "query($n: Int!) { posts(first: $n) { edges { node { id title author { name }
    commentCount comments(first: 5) { edges { node { body author { name } } } } } }
    pageInfo { hasNextPage endCursor } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_answers_are_the_executors() {
    let app = uncached_app().await;
    varied_data(&app).await;
    same_on_both(&app, REFERENCE, json!({ "n": 20 })).await;
    // Every field that compiles, aliases and `__typename` at every level, as Apollo Client sends them.
    let everything = "query Feed($first: Int = 3, $after: String, $c: Int) {
        __typename
        feed: posts(first: $first, after: $after) {
            __typename
            edges { __typename cursor node {
                __typename id title content published publishedAt createdAt updatedAt commentCount
                writer: author { __typename id name role createdAt }
                comments(first: $c) {
                    __typename totalCount
                    pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }
                    edges { cursor node { __typename id body createdAt author { id name role } } }
                    nodes { id }
                }
            } }
            nodes { id t: title }
            pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }
        } }";
    let first_page = same_on_both(&app, everything, json!({ "c": 2 })).await;
    let first_page: Value = serde_json::from_str(&first_page).expect("JSON");
    let cursor = first_page["data"]["feed"]["pageInfo"]["endCursor"].clone();
    assert!(cursor.is_string(), "{first_page}");
    // The next page, by cursor, and the last (past the end): cursors, `hasPreviousPage`, empty lists.
    same_on_both(
        &app,
        everything,
        json!({ "after": cursor, "first": 2, "c": 3 }),
    )
    .await;
    same_on_both(
        &app,
        everything,
        json!({ "after": cursor, "first": 100, "c": 3 }),
    )
    .await;
    // A comment cursor and an empty page.
    let comments = "query($after: String) { posts(first: 10) { edges { node { id
        comments(first: 3, after: $after) { totalCount edges { cursor node { body } }
        pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } } } } }";
    let all = same_on_both(&app, comments, json!({})).await;
    let all: Value = serde_json::from_str(&all).expect("JSON");
    let comment_cursor = all["data"]["posts"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .find_map(|e| e["node"]["comments"]["pageInfo"]["endCursor"].as_str())
        .expect("some post has comments")
        .to_owned();
    let after = same_on_both(&app, comments, json!({ "after": comment_cursor })).await;
    // Fields in selection order, whichever finished first.
    assert!(
        after.contains(r#"{"totalCount":0,"edges":[],"pageInfo":{"#),
        "{after}"
    );
    same_on_both(
        &app,
        "{ posts(first: 0) { edges { cursor } pageInfo { hasNextPage startCursor } } }",
        json!({}),
    )
    .await;
    // Drafts never show in the feed, compiled or not.
    let titles = same_on_both(&app, "{ posts(first: 100) { nodes { title } } }", json!({})).await;
    assert!(!titles.contains("Secret draft"), "{titles}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compiled_query_runs_one_statement_for_any_page_size() {
    let app = uncached_app().await;
    bulk(&app.store, 60, 7).await;
    let mut counts = Vec::new();
    for n in [5, 5, 50] {
        let (body, statements) = app.statements_for(REFERENCE, json!({ "n": n })).await;
        assert!(body.get("errors").is_none(), "{body}");
        let edges = body["data"]["posts"]["edges"].as_array().expect("edges");
        assert_eq!(edges.len(), n as usize);
        for e in edges {
            assert_eq!(e["node"]["commentCount"], 7);
            assert_eq!(
                e["node"]["comments"]["edges"]
                    .as_array()
                    .expect("comments")
                    .len(),
                5
            );
        }
        counts.push(statements);
    }
    // The executor's first run (two statements, see `prefetch.rs`), then the compiled page: one.
    assert_eq!(counts, [2, 1, 1]);
    assert_eq!(app.metric(COMPILED).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_queries_refuse_what_the_executor_refuses() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.cache.mode = CacheMode::Off;
    // The reference query's complexity is 35 per post: exactly the limit at 20 posts, one post over it at 21
    // (`complexity_is_the_executors` checks the computation itself).
    config.max_complexity = 700;
    let app = TestApp::spawn_with(db, config).await;
    bulk(&app.store, 3, 2).await;
    // `$n` may be omitted here, which makes it `null`: not an `Int` for `first` either.
    let nullable = "query($n: Int) { posts(first: $n) { nodes { id } } }";
    for (query, n) in [(REFERENCE, 20), (nullable, 1)] {
        // Executed, compiled, and run compiled.
        for _ in 0..2 {
            let (status, body) = raw(&app, query, &json!({ "n": n })).await;
            assert!(
                status == StatusCode::OK && !body.contains("errors"),
                "{body}"
            );
        }
    }
    let compiled_before = app.metric(COMPILED).await;
    assert_eq!(compiled_before, 2.0);
    let bad = [
        (REFERENCE, json!({ "n": 101 })),
        (REFERENCE, json!({ "n": -1 })),
        (REFERENCE, json!({ "n": "20" })),
        (REFERENCE, json!({ "n": 2.5 })),
        (REFERENCE, json!({ "n": null })),
        (REFERENCE, json!({})),
        (REFERENCE, json!({ "n": 21 })),
        (REFERENCE, json!({ "n": 60 })),
        (nullable, json!({})),
        (nullable, json!({ "n": null })),
    ];
    for (query, variables) in bad {
        let (status, compiled) = raw(&app, query, &variables).await;
        let (executor_status, executor) = raw(&app, &copy(query), &variables).await;
        assert_eq!(status, executor_status, "{variables}");
        let (compiled, executor): (Value, Value) = (
            serde_json::from_str(&compiled).expect("JSON"),
            serde_json::from_str(&executor).expect("JSON"),
        );
        assert!(compiled["errors"].is_array(), "{variables}: {compiled}");
        assert_eq!(compiled["data"], executor["data"], "{variables}");
        assert_eq!(
            compiled["errors"][0]["message"], executor["errors"][0]["message"],
            "{variables}"
        );
        assert_eq!(
            compiled["errors"][0]["extensions"]["code"],
            executor["errors"][0]["extensions"]["code"],
            "{variables}"
        );
    }
    assert_eq!(
        app.metric(COMPILED).await,
        compiled_before,
        "refusals ran on the executor"
    );
    // A bad cursor is the resolver's error, with its path.
    let (_, body) = raw(
        &app,
        REFERENCE
            .replace("first: $n", "first: $n, after: \"nope\"")
            .as_str(),
        &json!({ "n": 2 }),
    )
    .await;
    assert!(body.contains("BAD_USER_INPUT"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_outside_the_compiled_shape_stay_on_the_executor() {
    let app = uncached_app().await;
    let fixture = Fixture::create(&app.store).await;
    let outside = [
        // Fragments, directives, a filter, a field whose answer depends on the caller, a second root field,
        // the feed's own total, two different comment pages.
        "{ posts { edges { node { ...P } } } } fragment P on Post { id }",
        "query($s: Boolean!) { posts { edges { node { id title @include(if: $s) } } } }",
        "{ posts(filter: { drafts: true }) { edges { node { id } } } }",
        "{ posts { edges { node { author { email plan } } } } }",
        "{ posts { nodes { id } } me { id } }",
        "{ posts { totalCount } }",
        "{ posts { nodes { a: comments(first: 1) { nodes { id } } b: comments(first: 2) { nodes { id } } } } }",
        "mutation { updateProfile(input: { name: \"Alice\" }) { name } }",
    ];
    let token = token_for(fixture.alice);
    for query in outside {
        for _ in 0..3 {
            let res = app
                .post_graphql_as(
                    Some(&token),
                    json!({ "query": query, "variables": { "s": true } }),
                )
                .await;
            assert!(res.status().is_success() || res.status().is_client_error());
        }
    }
    // A document with a second operation: validation covers both (here, `$m` must be given even to run
    // `Feed`), so it stays on the executor.
    let two = "query Feed { posts(first: 5) { nodes { id } } } query Big($m: Int!) { posts(first: $m) { nodes { id } } }";
    for variables in [json!({ "m": 1 }), json!({ "m": 1 }), json!({})] {
        let res = app
            .post_graphql_as(
                None,
                json!({ "query": two, "operationName": "Feed", "variables": variables }),
            )
            .await;
        let body: Value = res.json().await.expect("JSON");
        if variables.get("m").is_none() {
            assert!(body["errors"].is_array(), "{body}");
        } else {
            assert!(body.get("errors").is_none(), "{body}");
        }
    }
    assert_eq!(app.metric(COMPILED).await, 0.0);
    // The caller-dependent fields still answer per caller.
    let mine = app
        .gql_as(
            Some(&token),
            "{ posts(filter: { drafts: true }, first: 10) { nodes { title } } }",
            json!({}),
        )
        .await;
    assert!(mine.to_string().contains("Secret draft"), "{mine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_answers_are_cached_and_purged_like_the_executors() {
    // The suite's cache (in-process, or Redis under FOLIO_TEST_REDIS_URL).
    let app = TestApp::spawn().await;
    let fixture = Fixture::create(&app.store).await;
    let query = "query($n: Int!) { posts(first: $n) { nodes { id commentCount comments(first: 10) { nodes { body author { name } } } author { name } } } }";
    // The first execution compiles; a different page size misses the cache and runs compiled.
    let _ = app.gql(query, json!({ "n": 10 })).await;
    let compiled = app.metric(COMPILED).await;
    let before = app.gql(query, json!({ "n": 9 })).await;
    assert_eq!(app.metric(COMPILED).await, compiled + 1.0);
    assert!(!before.to_string().contains("A fresh comment"));
    // A comment on a post in the page purges the stored compiled answer.
    let token = token_for(fixture.carol);
    let added = app
        .gql_as(
            Some(&token),
            "mutation($p: ID!) { addComment(input: { postId: $p, body: \"A fresh comment\" }) { id } }",
            json!({ "p": fixture.bob_posts[0].to_string() }),
        )
        .await;
    assert!(added.get("errors").is_none(), "{added}");
    let after = app.gql(query, json!({ "n": 9 })).await;
    assert!(after.to_string().contains("A fresh comment"), "{after}");
    // So does renaming an author.
    let renamed = app
        .gql_as(
            Some(&token_for(fixture.bob)),
            "mutation { updateProfile(input: { name: \"Robert Marley\" }) { name } }",
            json!({}),
        )
        .await;
    assert!(renamed.get("errors").is_none(), "{renamed}");
    let after = app.gql(query, json!({ "n": 9 })).await;
    assert!(after.to_string().contains("Robert Marley"), "{after}");
}
