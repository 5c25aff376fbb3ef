//! The HTTP surface around GraphQL: GET queries, GraphiQL, health, metrics, request ids, limits and codes.

use serde_json::{Value, json};

use crate::helpers::{TestApp, bulk, first_code, test_config};

/// The first error's message, lower-cased.
fn first_message(body: &Value) -> String {
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_runs_queries_with_variables_and_operation_name() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 3, 0).await;
    let res = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(&[
            (
                "query",
                "query A { posts(first: 1) { totalCount } } query B($n: Int) { posts(first: $n) { edges { cursor } } }",
            ),
            ("operationName", "B"),
            ("variables", "{\"n\": 2}"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["data"]["posts"]["edges"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_get_graphiql_pointing_at_the_endpoint() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(format!("{}/graphql", app.base))
        .header("accept", "text/html,*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("graphiql"), "GraphiQL page");
    assert!(page.contains("/graphql"), "endpoint set");

    // Not a browser and no query: a coded error, not a page.
    let res = app.get("/graphql").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(first_code(&body), "BAD_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_can_be_turned_off() {
    let db = crate::helpers::TestDb::create().await;
    let config = folio::Config {
        graphiql: false,
        ..test_config(&db)
    };
    let app = TestApp::spawn_with(db, config).await;
    let res = app
        .client
        .get(format!("{}/graphql", app.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    // No playground, and HTML is not a GraphQL response type.
    assert_eq!(res.status(), 406);
    assert!(!res.text().await.unwrap().contains("graphiql"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_request_ids() {
    let app = TestApp::spawn().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    assert_eq!(app.get("/readyz").await.status(), 200);

    // A client-chosen request id is kept and echoed.
    let res = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");

    app.gql("{ posts { totalCount } }", json!({})).await;
    let _ = app.get("/nope").await;
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains("folio_http_requests_total{status=\"200\"}"),
        "{text}"
    );
    assert!(
        text.contains("folio_http_requests_total{status=\"404\"}"),
        "{text}"
    );
    assert!(
        text.contains("folio_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(app.metric("folio_db_statements_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_a_code() {
    let app = TestApp::spawn().await;
    // Parse error.
    let body = app.gql("{ posts { ", json!({})).await;
    assert_eq!(first_code(&body), "GRAPHQL_PARSE_FAILED", "{body}");
    // Validation error.
    let body = app.gql("{ posts { nope } }", json!({})).await;
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    // Wrong variable type.
    let body = app
        .gql(
            "query($n: Int) { posts(first: $n) { totalCount } }",
            json!({ "n": "five" }),
        )
        .await;
    assert_ne!(first_code(&body), "<none>", "{body}");
    // Malformed JSON body: a GraphQL-shaped 400.
    let res = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(first_code(&body), "BAD_REQUEST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_and_complexity_limits_apply() {
    let db = crate::helpers::TestDb::create().await;
    let config = folio::Config {
        max_depth: 6,
        max_complexity: 500,
        ..test_config(&db)
    };
    let app = TestApp::spawn_with(db, config).await;

    let deep = "{ posts(first: 1) { edges { node { comments(first: 1) { edges { node { post { author { name } } } } } } } } }";
    let body = app.gql(deep, json!({})).await;
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(first_message(&body).contains("deep"), "{body}");

    let wide = "{ posts(first: 100) { edges { node { id title content author { name } } } } }";
    let body = app.gql(wide, json!({})).await;
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
    assert!(first_message(&body).contains("complex"), "{body}");

    let fine = "{ posts(first: 10) { edges { node { id title } } } }";
    let body = app.gql(fine, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_admit_the_reference_query_at_full_page_size() {
    let app = TestApp::spawn().await;
    let q = "{ posts(first: 100) { totalCount pageInfo { hasNextPage endCursor } edges { cursor node { id title
        author { id name } commentCount comments(first: 20) { totalCount edges { node { id body author { name } } } } } } } }";
    let body = app.gql(q, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
}
