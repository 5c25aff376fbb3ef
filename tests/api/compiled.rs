//! Planned reads (`graphql/compiled`): a repeated query answered without the executor must be the executor's
//! answer, with the same cache tags and scope, must refuse what the executor refuses, and must purge like it.
//!
//! A document's first execution runs on the executor (which validates it) and plans it; later ones run the
//! plan. So the executor's answer for a request is the answer to a copy of the document with one more comment (a
//! document of its own), and `folio_graphql_compiled_total` tells which path answered.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};

use folio::auth::Viewer;
use folio::cache::CacheMode;
use folio::operation::{Accepts, Outcome, Pipeline, Request, Status};
use folio::store::Role;
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
async fn varied_data(app: &TestApp) -> Fixture {
    let fixture = Fixture::create(&app.store).await;
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
    fixture
}

const REFERENCE: &str =
    "query($n: Int!) { posts(first: $n) { edges { node { id title author { name }
    commentCount comments(first: 5) { edges { node { body author { name } } } } } }
    pageInfo { hasNextPage endCursor } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compiled_answers_are_the_executors() {
    let app = uncached_app().await;
    let _ = varied_data(&app).await;
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
async fn operations_outside_what_plans_stay_on_the_executor() {
    let app = uncached_app().await;
    let fixture = Fixture::create(&app.store).await;
    let outside = [
        // Fields whose answer depends on the caller beyond the rows they return, a root field that is the
        // caller, a guarded list, a comment's post (hidden with a draft), federation entities, a mutation, and a
        // fragment on an abstract type.
        "{ posts { edges { node { author { email plan } } } } }",
        "{ posts { nodes { id } } me { id } }",
        "{ users { nodes { id } } }",
        "{ posts { nodes { comments { nodes { post { id } } } } } }",
        "{ _entities(representations: [{ __typename: \"Post\", id: \"1\" }]) { ... on Post { id } } }",
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

fn pipeline_request(document: &str, variables: &Value, viewer: &Viewer) -> Request {
    Request {
        document: Some(document.to_owned()),
        document_id: None,
        operation_name: None,
        variables: async_graphql::Variables::from_json(variables.clone()),
        extensions: Default::default(),
        viewer: viewer.clone(),
        client: IpAddr::V4(Ipv4Addr::LOCALHOST),
        request_id: "planned-test".to_owned(),
        accepts: Accepts::Any,
        deadline: None,
        reveals_sdl: false,
    }
}

fn outcome_body(outcome: &Outcome) -> Value {
    serde_json::from_slice(&outcome.entry.body).expect("a JSON body")
}

const ADMIN: Viewer = Viewer::User {
    id: 0,
    role: Role::Admin,
};

fn user(id: i64) -> Viewer {
    Viewer::User {
        id,
        role: Role::User,
    }
}

/// Runs `query` as `viewer` on the executor, then, its cached answer purged, planned; checks that both give
/// the same JSON, the same cache scope (public, or the caller's own) and the same tags, and returns it.
async fn same_as(app: &TestApp, query: &str, variables: Value, viewer: &Viewer) -> Value {
    let pipeline: Pipeline = app.pipeline.clone().expect("an in-process app");
    let doc = copy(query);
    let executor = pipeline
        .run(pipeline_request(&doc, &variables, viewer))
        .await;
    let expected = outcome_body(&executor);
    assert_eq!(executor.status, Status::Ok, "{expected}");
    assert!(expected.get("errors").is_none(), "{query}: {expected}");
    // Drop the stored answer (any one of its tags does), so the next request executes again.
    if let Some(tag) = executor.tags.first() {
        let purged = pipeline
            .run(pipeline_request(
                "mutation($t: [String!]!) { purgeCache(tags: $t) }",
                &json!({ "t": [tag.name()] }),
                &ADMIN,
            ))
            .await;
        assert!(outcome_body(&purged).get("errors").is_none());
    }
    let before = app.metric(COMPILED).await;
    let planned = pipeline
        .run(pipeline_request(&doc, &variables, viewer))
        .await;
    assert_eq!(
        app.metric(COMPILED).await - before,
        1.0,
        "the second request should have been planned: {query} {variables}"
    );
    let got = outcome_body(&planned);
    assert_eq!(
        got, expected,
        "planned and executor answers differ for {query} {variables}"
    );
    assert_eq!(
        planned.entry.public, executor.entry.public,
        "cache scope differs for {query} {variables}"
    );
    let sorted = |tags: &[folio::cache::Tag]| {
        let mut tags: Vec<String> = tags.iter().map(|tag| tag.name()).collect();
        tags.sort();
        tags.dedup();
        tags
    };
    assert_eq!(
        sorted(&planned.tags),
        sorted(&executor.tags),
        "tags differ for {query} {variables}"
    );
    got
}

/// The three workloads of `../shared/perf` as Apollo Client sends them: fragments, `__typename` everywhere.
const APOLLO_FEED: &str = "query Feed($n: Int!) { posts(first: $n) { __typename edges { __typename node { ...PostCard } }
    pageInfo { __typename hasNextPage endCursor } } }
    fragment PostCard on Post { __typename id title author { ...Author } commentCount
      comments(first: 5) { __typename edges { __typename node { __typename body author { ...Author } } } } }
    fragment Author on User { __typename id name }";
const APOLLO_DETAIL: &str = "query Detail($id: ID!) { post(id: $id) { ...PostDetail } }
    fragment PostDetail on Post { __typename id title content author { __typename id name } commentCount
      comments(first: 20) { __typename edges { __typename node { ...CommentItem } } pageInfo { __typename hasNextPage endCursor } } }
    fragment CommentItem on Comment { __typename id body author { __typename id name } }";
const APOLLO_AUTHOR: &str = "query Author($id: ID!) { user(id: $id) { __typename id name
    posts(first: 10) { __typename edges { __typename node { __typename id title commentCount } } pageInfo { __typename hasNextPage endCursor } } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_typename_directives_and_every_root_field_plan_with_the_executors_answers() {
    let app = TestApp::spawn().await;
    let f = varied_data(&app).await;
    let anon = Viewer::Anonymous;
    let (alice, bob) = (user(f.alice), user(f.bob));
    let post = f.alice_posts[0].to_string();
    let draft = f.alice_draft.to_string();

    same_as(&app, APOLLO_FEED, json!({ "n": 20 }), &anon).await;
    let detail = same_as(&app, APOLLO_DETAIL, json!({ "id": post }), &anon).await;
    assert_eq!(
        detail["data"]["post"]["comments"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let author = same_as(
        &app,
        APOLLO_AUTHOR,
        json!({ "id": f.bob.to_string() }),
        &anon,
    )
    .await;
    assert_eq!(
        author["data"]["user"]["posts"]["edges"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // An author's page reads its posts' content only when it shows it (the feed's rule).
    let pages = "query($id: ID!, $body: Boolean!) {
        user(id: $id) { posts(first: 10) { nodes { title ... @include(if: $body) { content } } } } }";
    for body in [true, false] {
        let vars = json!({ "id": f.alice.to_string(), "body": body });
        let got = same_as(&app, pages, vars, &anon).await;
        let shown = got["data"]["user"]["posts"]["nodes"]
            .as_array()
            .is_some_and(|nodes| {
                nodes
                    .iter()
                    .any(|n| n["content"].as_str().is_some_and(|c| !c.is_empty()))
            });
        assert_eq!(shown, body, "{got}");
    }

    // Inline fragments, a fragment inside a fragment, one response key selected several ways (merged), aliases,
    // several root fields, and `@include`/`@skip` from variables and literals, each way.
    let mixed = "query($id: ID!, $uid: ID!, $body: Boolean!, $skipAuthor: Boolean = false) {
        __typename
        a: post(id: $id) { ... on Post { id title } title author { name } author { id } ...Extra }
        feed: posts(first: 3) { totalCount nodes { id ... @include(if: $body) { content } author @skip(if: $skipAuthor) { name } } }
        u: user(id: $uid) { name ...UserPosts @include(if: true) createdAt @skip(if: true) }
      }
      fragment Extra on Post { comments(first: 2) { totalCount nodes { id body @include(if: $body) ...Who } } }
      fragment Who on Comment { author { ...Name } }
      fragment Name on User { name role }
      fragment UserPosts on User { posts(first: 1) { totalCount nodes { title } } }";
    for (body, skip) in [(true, false), (false, true), (true, true)] {
        let vars =
            json!({ "id": post, "uid": f.bob.to_string(), "body": body, "skipAuthor": skip });
        let got = same_as(&app, mixed, vars, &anon).await;
        assert_eq!(
            got["data"]["feed"]["nodes"][0].get("content").is_some(),
            body,
            "{got}"
        );
    }

    // Nulls: no such post or user; a draft, to anyone but its author and admins; and the same draft to them.
    let nulls = "query($d: ID!) { missing: post(id: \"999999\") { id } nobody: user(id: \"999999\") { id } d: post(id: $d) { id title } }";
    for viewer in [&anon, &bob, &alice, &ADMIN] {
        let got = same_as(&app, nulls, json!({ "d": draft }), viewer).await;
        assert!(got["data"]["missing"].is_null());
        let sees = matches!(viewer, Viewer::User { id, .. } if *id == f.alice) || viewer == &ADMIN;
        assert_eq!(got["data"]["d"].is_null(), !sees, "{got}");
    }

    // An author's posts include their drafts for them and for admins only; filters, literal and in variables.
    let theirs = "query($a: ID!, $f: PostFilter) {
        user(id: $a) { posts(first: 10) { totalCount nodes { title published } pageInfo { hasNextPage } } }
        byFilter: posts(first: 10, filter: $f) { totalCount nodes { title } }
        search: posts(filter: { authorId: $a, search: \"rust\" }) { nodes { title } }
      }";
    for viewer in [&anon, &bob, &alice, &ADMIN] {
        for filter in [
            json!(null),
            json!({ "drafts": true }),
            json!({ "search": "garden" }),
        ] {
            let got = same_as(
                &app,
                theirs,
                json!({ "a": f.alice.to_string(), "f": filter }),
                viewer,
            )
            .await;
            let titles = got["data"]["user"].to_string();
            let sees =
                matches!(viewer, Viewer::User { id, .. } if *id == f.alice) || viewer == &ADMIN;
            assert_eq!(titles.contains("Secret draft"), sees, "{got}");
        }
    }

    // Deeper: authors' own posts under a page, and comment authors' posts, as a reader and as an author.
    let deep =
        "{ posts(first: 3) { nodes { author { posts(first: 2) { nodes { title author { name } } } }
        comments { edges { cursor node { author { posts(first: 1) { totalCount } } } } } } } }";
    same_as(&app, deep, json!({}), &anon).await;
    same_as(&app, deep, json!({}), &alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_reads_run_one_statement_per_level() {
    let app = uncached_app().await;
    bulk(&app.store, 60, 7).await;
    let apollo = |q: &str| q.to_owned();
    for query in [REFERENCE.to_owned(), apollo(APOLLO_FEED)] {
        let mut counts = Vec::new();
        for n in [5, 5, 50] {
            let (body, statements) = app.statements_for(&query, json!({ "n": n })).await;
            assert!(body.get("errors").is_none(), "{body}");
            let edges = body["data"]["posts"]["edges"].as_array().expect("edges");
            assert_eq!(edges.len(), n as usize);
            for e in edges {
                assert_eq!(e["node"]["commentCount"], 7);
                let comments = e["node"]["comments"]["edges"].as_array().expect("comments");
                assert_eq!(comments.len(), 5);
            }
            counts.push(statements);
        }
        // The page with its authors, then the comment pages with their counts and authors: two statements, on
        // the executor (see `prefetch.rs`) and planned, whatever the page size.
        assert_eq!(counts, [2, 2, 2], "{query}");
    }
    let (body, _) = app
        .statements_for(
            "{ posts(first: 1) { nodes { id author { id } } } }",
            json!({}),
        )
        .await;
    let post = body["data"]["posts"]["nodes"][0]["id"].clone();
    let author = body["data"]["posts"]["nodes"][0]["author"]["id"].clone();
    // A post with its author joined, then its comment page with counts and authors: two statements. A user,
    // their page of posts, and the posts' comment counts: three.
    for (query, id, planned) in [(APOLLO_DETAIL, &post, 2), (APOLLO_AUTHOR, &author, 3)] {
        let mut counts = Vec::new();
        for _ in 0..2 {
            let (body, statements) = app.statements_for(query, json!({ "id": id })).await;
            assert!(body.get("errors").is_none(), "{body}");
            counts.push(statements);
        }
        assert_eq!(counts[1], planned, "{query}");
    }
}

/// Where a field of each type the planned path answers can be reached from the root, around `{}`.
fn reach(ty: &str) -> Option<&'static str> {
    Some(match ty {
        "Query" => "{ {} }",
        "Post" => "{ posts(first: 5) { nodes { {} } } }",
        "Comment" => "{ posts(first: 5) { nodes { comments { nodes { {} } } } } }",
        "User" => {
            "{ posts(first: 5) { nodes { author { {} } comments { nodes { author { {} } } } } } }"
        }
        "PostConnection" => "{ posts(first: 5) { {} } }",
        "PostEdge" => "{ posts(first: 5) { edges { {} } } }",
        "CommentConnection" => "{ posts(first: 5) { nodes { comments { {} } } } }",
        "CommentEdge" => "{ posts(first: 5) { nodes { comments { edges { {} } } } } }",
        "PageInfo" => "{ posts(first: 5) { pageInfo { {} } } }",
        _ => return None,
    })
}

/// Who may see what has one source of truth: the resolvers. `compiled::ANSWERED` declares every field the
/// planned path answers; this walks the schema and, for each declared field, asks the executor (the resolvers,
/// their guards and visibility rules) as four different callers:
/// - a field declared `Public` must answer every caller without an error, the same, and without reading who
///   asks (the answer stays publicly cacheable). A guard or a viewer-dependent rule added to such a field
///   fails here;
/// - a field declared `Rows` (its rows depend on the viewer, through the resolver's own rule that the planned
///   path calls too) must at least answer without an error: a guard added to it fails here, and the
///   comparison tests check each caller's rows;
/// - every declared field exists in the schema with the declared type, and every other field of those types
///   is refused by the planner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_planned_path_answers_is_what_the_resolvers_allow_every_caller() {
    use apollo_compiler::schema::ExtendedType;
    use folio::graphql::compiled::{ANSWERED, Access, Plan};

    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let pipeline = app.pipeline.clone().expect("an in-process app");
    let sdl = folio::graphql::schema::sdl();
    let schema = apollo_compiler::Schema::parse(&sdl, "schema.graphql").expect("the schema parses");
    let viewers = [Viewer::Anonymous, user(f.bob), user(f.alice), ADMIN];
    let mut checked = 0;
    for (ty, def) in &schema.types {
        let (Some(around), ExtendedType::Object(object)) = (reach(ty.as_str()), def) else {
            continue;
        };
        for (name, field) in &object.fields {
            let returns = field.ty.inner_named_type().as_str();
            let object_valued = matches!(schema.types.get(returns), Some(ExtendedType::Object(_)));
            let declared = ANSWERED
                .iter()
                .find(|a| a.ty == ty.as_str() && a.field == name.as_str());
            let Some(declared) = declared else {
                // Not declared: the planner refuses any document selecting it.
                let sub = if object_valued { " { __typename }" } else { "" };
                let query = around.replace("{}", &format!("{name}{sub}"));
                let doc = async_graphql::parser::parse_query(&query).expect("parses");
                let variables = async_graphql::Variables::default();
                let plan = Plan::compile(
                    &doc,
                    None,
                    &variables,
                    async_graphql::CacheControl::default(),
                );
                assert!(plan.is_none(), "{ty}.{name} is not declared, yet planned");
                continue;
            };
            assert_eq!(
                declared.returns, returns,
                "{ty}.{name} is declared with another type"
            );
            let args = match (ty.as_str(), name.as_str()) {
                ("Query", "post") => format!("(id: \"{}\")", f.alice_posts[0]),
                ("Query", "user") => format!("(id: \"{}\")", f.alice),
                _ => String::new(),
            };
            let sub = if object_valued { " { __typename }" } else { "" };
            let query = around.replace("{}", &format!("{name}{args}{sub}"));
            let mut answers = Vec::new();
            for viewer in &viewers {
                // A document of its own, so the executor answers it.
                let outcome = pipeline
                    .run(pipeline_request(&copy(&query), &json!({}), viewer))
                    .await;
                let body = outcome_body(&outcome);
                assert!(
                    body.get("errors").is_none(),
                    "{ty}.{name} answers {viewer:?} with an error, but the planned path answers it for anyone: {body}"
                );
                if declared.access == Access::Public {
                    assert!(
                        outcome.entry.public,
                        "{ty}.{name} reads who asks on the executor, but is declared the same for every caller"
                    );
                }
                answers.push(body);
            }
            if declared.access == Access::Public {
                assert!(
                    answers.windows(2).all(|w| w[0] == w[1]),
                    "{ty}.{name} answers callers differently, but is declared the same for every caller: {answers:?}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        ANSWERED.len(),
        "every declared field was found in the schema and checked"
    );
}

/// Concurrent requests share statements (`store/share.rs`): many requests at once, for different posts and
/// authors, planned and on the executor, run fewer statements than they would one by one, and each gets
/// exactly the answer it gets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_statements_and_each_gets_its_own_answer() {
    let app = uncached_app().await;
    let mut posts = bulk(&app.store, 20, 2).await;
    posts.extend(bulk(&app.store, 20, 5).await);
    // Not planned (`me`): the executor's loaders, which read through the same store functions.
    const EXECUTOR: &str = "query($id: ID!) { me { id } post(id: $id) { id title commentCount \
        comments(first: 3) { nodes { id body author { name } } } } }";
    let mut calls: Vec<(&str, Value)> = Vec::new();
    for id in &posts {
        calls.push((APOLLO_DETAIL, json!({ "id": id.to_string() })));
        calls.push((EXECUTOR, json!({ "id": id.to_string() })));
    }
    let body = app
        .gql(
            "{ posts(first: 40) { nodes { author { id } } } }",
            json!({}),
        )
        .await;
    let mut authors: Vec<String> = body["data"]["posts"]["nodes"]
        .as_array()
        .expect("posts")
        .iter()
        .map(|p| p["author"]["id"].as_str().expect("id").to_owned())
        .collect();
    authors.dedup();
    assert_eq!(authors.len(), 2, "two authors");
    for id in authors {
        calls.push((APOLLO_AUTHOR, json!({ "id": id })));
    }
    // Alone, each twice (the first run of a document plans it).
    let mut alone = Vec::new();
    let mut one_by_one = 0;
    for (query, variables) in &calls {
        app.gql(query, variables.clone()).await;
        let (body, statements) = app.statements_for(query, variables.clone()).await;
        assert!(body.get("errors").is_none(), "{body}");
        alone.push(body);
        one_by_one += statements;
    }
    let before = app.metric("folio_db_statements_total").await;
    let answers = futures_util::future::join_all(
        calls
            .iter()
            .map(|(query, variables)| app.gql(query, variables.clone())),
    )
    .await;
    let together = (app.metric("folio_db_statements_total").await - before) as u64;
    for ((answer, alone), (query, variables)) in answers.iter().zip(&alone).zip(&calls) {
        assert_eq!(answer, alone, "{query} with {variables}");
    }
    assert!(
        together < one_by_one,
        "{} requests at once ran {together} statements, one by one {one_by_one}",
        calls.len()
    );
}
