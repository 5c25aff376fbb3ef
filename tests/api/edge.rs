//! The HTTP edge as a client, a browser and an attacker see it (issue 7): GraphQL-over-HTTP content negotiation
//! and status codes, POST content types (the CSRF rule), malformed bodies, GET, every abuse limit just under and
//! just over, the execution timeout, CORS, rate limits (per caller, behind proxies, across two instances, failing
//! open), login throttling, production mode and secrets, and database faults (pool exhausted, database down and
//! back).
//!
//! Every assertion is on what crosses the wire (status, headers, body) plus `/metrics` and the database's
//! contents ("nothing executed" is checked by counting posts, not by trusting a status code). Each test spawns an
//! app configured for what it checks, so a limit is tested with everything else at its default. The tests that
//! need PostgreSQL or Redis themselves return early without them and say why.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use folio::Config;
use folio::cache::CacheMode;
use folio::config::Environment;
use folio::store::{Drafts, PostListFilter};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{
    Fixture, RedisTarget, TestApp, TestDb, bulk, first_code, spawn_instance, test_config,
    token_for, uses_redis,
};

// ---------------------------------------------------------------------------------------------------------------
// Requests and what the client sees
// ---------------------------------------------------------------------------------------------------------------

/// The GraphQL-over-HTTP response type: request errors answer 4xx under it.
const GQL_RESPONSE: &str = "application/graphql-response+json";
/// The legacy response type: 200 for every well-formed request.
const JSON: &str = "application/json";

/// A mutation with a side effect, to prove that a refused request executed nothing.
const CREATE_POST: &str = r#"mutation { createPost(input: { title: "Edge post", content: "Must not be written.", published: true }) { id } }"#;

/// One HTTP answer as the client receives it.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    /// The body as JSON; `Null` when it is not JSON.
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("<none>")
    }

    /// The first error's `extensions.code`.
    fn code(&self) -> &str {
        first_code(&self.body)
    }

    /// Asserts the GraphQL error shape the spec wants for a request the server refused before executing:
    /// `errors` with a message and a code, no `data` at all.
    fn assert_request_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.code(), code, "{self:?}");
        assert!(
            self.body["errors"][0]["message"].is_string(),
            "GraphQL-shaped: {self:?}"
        );
        assert!(self.body.get("data").is_none(), "no `data`: {self:?}");
    }

    /// `Retry-After` as whole seconds.
    fn retry_after(&self) -> u64 {
        self.header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After in whole seconds: {self:?}"))
    }
}

async fn answer(res: reqwest::Response) -> Answer {
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        text,
        body,
    }
}

/// POSTs `body` exactly as given, with the given `Content-Type` and `Accept` (`None`: no `Content-Type`; reqwest
/// always sends an `Accept`, `*/*` unless told otherwise — see `raw_post` for a request without one).
async fn post_raw(
    app: &TestApp,
    content_type: Option<&str>,
    accept: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Answer {
    let mut req = app.client.post(format!("{}/graphql", app.base)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    answer(req.send().await.expect("request")).await
}

/// POSTs `{"query": query}` as `application/json`.
async fn post_query(app: &TestApp, accept: Option<&str>, query: &str) -> Answer {
    post_raw(
        app,
        Some(JSON),
        accept,
        json!({ "query": query }).to_string(),
    )
    .await
}

/// POSTs `{"query", "variables"}` as `application/json` with an optional bearer token and extra headers.
async fn post_as(
    app: &TestApp,
    token: Option<&str>,
    headers: &[(&str, &str)],
    query: &str,
    variables: Value,
) -> Answer {
    let mut req = app
        .client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    answer(req.send().await.expect("request")).await
}

/// `GET /graphql` with URL parameters, an optional `Accept` and bearer token.
async fn get_graphql(
    app: &TestApp,
    params: &[(&str, &str)],
    accept: Option<&str>,
    token: Option<&str>,
) -> Answer {
    let mut req = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(params);
    if let Some(accept) = accept {
        req = req.header("accept", accept);
    }
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    answer(req.send().await.expect("request")).await
}

/// A JSON POST written by hand on a socket, with no `Accept` header at all (which reqwest cannot send). Returns
/// the status, the `Content-Type` and the body.
async fn raw_post(app: &TestApp, body: &str) -> (u16, String, Value) {
    let head = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    raw_exchange(app, &head, body.as_bytes()).await
}

/// Sends `POST /graphql` with the header lines `head` (each ending in CRLF) and `body` as they are, and reads the
/// whole answer (`Connection: close`): status, `Content-Type` and body.
async fn raw_exchange(app: &TestApp, head: &str, body: &[u8]) -> (u16, String, Value) {
    let addr = app.base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("POST /graphql HTTP/1.1\r\nHost: {addr}\r\n{head}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    // The server may answer (and close) before reading everything: a failed write is not the test's concern.
    let _ = stream.write_all(body).await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("the server answers");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    (
        status,
        content_type,
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

/// Spawns an app on a fresh database with `test_config` changed by `change`.
async fn spawn_configured(change: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    change(&mut config);
    TestApp::spawn_with(db, config).await
}

/// Every post in the database, drafts included.
async fn post_count(app: &TestApp) -> i64 {
    app.store
        .count_posts(&PostListFilter {
            drafts: Drafts::All,
            ..Default::default()
        })
        .await
        .expect("count posts")
}

/// The document limits are request errors: 400 without `data` under `application/graphql-response+json`, 200
/// with the same code under `application/json`.
async fn assert_refused_as_request_error(app: &TestApp, query: &str, code: &str) {
    let a = post_query(app, Some(GQL_RESPONSE), query).await;
    a.assert_request_error(StatusCode::BAD_REQUEST, code);
    assert!(a.content_type().starts_with(GQL_RESPONSE), "{a:?}");
    let a = post_query(app, Some(JSON), query).await;
    a.assert_request_error(StatusCode::OK, code);
    assert!(a.content_type().starts_with(JSON), "{a:?}");
}

/// Asserts that `query` runs without errors (under the strict response type, where any request error is a 400).
async fn assert_admitted(app: &TestApp, query: &str) -> Value {
    let a = post_query(app, Some(GQL_RESPONSE), query).await;
    assert_eq!(a.status, StatusCode::OK, "{query}: {a:?}");
    assert!(a.body.get("errors").is_none(), "{query}: {a:?}");
    a.body["data"].clone()
}

// ---------------------------------------------------------------------------------------------------------------
// GraphQL over HTTP: content negotiation
// ---------------------------------------------------------------------------------------------------------------

/// The spec's status codes by response type: a document that cannot run (parse or validation failure) is a 400
/// without `data` under `application/graphql-response+json` and a 200 under `application/json`; a field error is
/// a 200 with `data` under both. The response type is the one asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_errors_are_400_under_graphql_response_json_and_200_under_json() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;

    let request_errors = [
        ("{ posts { nope } }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ posts { ", "GRAPHQL_PARSE_FAILED"),
        (
            "query Q($n: Int) { posts { totalCount } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "{ posts(first: $n) { totalCount } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        ("query { a } query { b }", "GRAPHQL_VALIDATION_FAILED"),
    ];
    for (query, code) in request_errors {
        assert_refused_as_request_error(&app, query, code).await;
    }

    // A field error is not a request error: the operation ran and `data` is there.
    let field_error = r#"{ __typename post(id: "abc") { title } }"#;
    for accept in [GQL_RESPONSE, JSON] {
        let a = post_query(&app, Some(accept), field_error).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        assert!(a.content_type().starts_with(accept), "{a:?}");
        assert_eq!(a.code(), "BAD_USER_INPUT", "{a:?}");
        assert_eq!(a.body["errors"][0]["path"], json!(["post"]), "{a:?}");
        assert_eq!(
            a.body["data"]["__typename"], "Query",
            "`data` is there: {a:?}"
        );
    }

    // Success, in each type asked for.
    let ok = format!(r#"{{ post(id: "{}") {{ title }} }}"#, f.alice_posts[0]);
    for accept in [
        GQL_RESPONSE,
        "application/graphql-response+json; charset=utf-8",
        "application/graphql-response+json, application/json;q=0.9",
    ] {
        let a = post_query(&app, Some(accept), &ok).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        assert!(
            a.content_type().starts_with(GQL_RESPONSE),
            "{accept}: {a:?}"
        );
        assert_eq!(a.body["data"]["post"]["title"], "Ownership in Rust");
    }
    for accept in [
        JSON,
        "*/*",
        "application/*",
        "text/html, application/json",
        // Refused explicitly: the other type.
        "application/graphql-response+json;q=0, application/json",
    ] {
        let a = post_query(&app, Some(accept), &ok).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        assert!(a.content_type().starts_with(JSON), "{accept}: {a:?}");
        assert_eq!(a.body["data"]["post"]["title"], "Ownership in Rust");
    }

    // No `Accept` at all: application/json, and request errors stay 200 for legacy clients.
    let (status, content_type, body) = raw_post(&app, &json!({ "query": ok }).to_string()).await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with(JSON), "{content_type}");
    assert_eq!(body["data"]["post"]["title"], "Ownership in Rust");
    let (status, content_type, body) =
        raw_post(&app, &json!({ "query": "{ posts { nope } }" }).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with(JSON), "{content_type}");
    assert_eq!(first_code(&body), "GRAPHQL_VALIDATION_FAILED", "{body}");
}

/// An argument of the wrong type is a validation failure like any other (the document parsed): every error of
/// the response says `GRAPHQL_VALIDATION_FAILED`, none `GRAPHQL_PARSE_FAILED`, and it is a 400 request error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_argument_of_the_wrong_type_is_a_validation_failure() {
    let app = TestApp::spawn().await;
    let mut misclassified = Vec::new();
    for query in [
        "{ posts(first: \"ten\") { totalCount } }",
        "{ posts(first: 1.5) { totalCount } }",
        "{ posts(filter: { drafts: \"yes\" }) { totalCount } }",
    ] {
        let a = post_query(&app, Some(GQL_RESPONSE), query).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{query}: {a:?}");
        assert!(a.body.get("data").is_none(), "{query}: {a:?}");
        for err in a.body["errors"].as_array().expect("errors") {
            if err["extensions"]["code"] != "GRAPHQL_VALIDATION_FAILED" {
                misclassified.push(format!("{query} -> {err}"));
            }
        }
    }
    assert!(
        misclassified.is_empty(),
        "a document that parsed is not a parse failure; wrong codes:\n{}",
        misclassified.join("\n")
    );
}

/// Neither response type acceptable: 406, for POST and for GET with a query, and nothing executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacceptable_accept_is_406_and_executes_nothing() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let token = token_for(f.alice);
    let before = post_count(&app).await;

    for accept in [
        "text/html",
        "text/plain",
        "application/xml",
        "application/json;q=0",
    ] {
        let req = app
            .client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .header("accept", accept)
            .json(&json!({ "query": CREATE_POST }));
        let a = answer(req.send().await.unwrap()).await;
        assert_eq!(a.status, StatusCode::NOT_ACCEPTABLE, "{accept}: {a:?}");
        assert_eq!(a.code(), "NOT_ACCEPTABLE", "{a:?}");
    }
    let a = get_graphql(
        &app,
        &[("query", "{ posts { totalCount } }")],
        Some("text/html"),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::NOT_ACCEPTABLE, "{a:?}");
    assert_eq!(
        post_count(&app).await,
        before,
        "a 406 executed the mutation"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// POST content types: the CSRF rule
// ---------------------------------------------------------------------------------------------------------------

/// Every content type a browser may send cross-site without a preflight (and any other non-JSON one) is 415,
/// and the mutation in the body — valid JSON, with a valid token — is never executed. The same request as
/// `application/json; charset=utf-8` does execute, which shows the count would have moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_json_posts_are_415_and_execute_nothing() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let token = token_for(f.alice);
    let body = json!({ "query": CREATE_POST }).to_string();
    let before = post_count(&app).await;

    let refused = [
        None,
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=----folio"),
        Some("application/graphql"),
        Some("application/jsonp"),
        Some("application/json; charset=iso-8859-1"),
        Some("text/json"),
    ];
    for content_type in refused {
        for accept in [GQL_RESPONSE, JSON] {
            let mut req = app
                .client
                .post(format!("{}/graphql", app.base))
                .bearer_auth(&token)
                .header("accept", accept)
                .header("origin", "https://evil.example")
                .body(body.clone());
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            let a = answer(req.send().await.unwrap()).await;
            a.assert_request_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE");
            assert!(
                a.content_type().starts_with(accept),
                "{content_type:?}: {a:?}"
            );
        }
    }
    assert_eq!(
        post_count(&app).await,
        before,
        "a refused content type executed the mutation"
    );

    for content_type in [
        "application/json; charset=utf-8",
        "Application/JSON",
        "application/json;charset=\"UTF-8\"",
    ] {
        let a = app
            .client
            .post(format!("{}/graphql", app.base))
            .bearer_auth(&token)
            .header("content-type", content_type)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let a = answer(a).await;
        assert_eq!(a.status, StatusCode::OK, "{content_type}: {a:?}");
        assert!(a.body["data"]["createPost"]["id"].is_string(), "{a:?}");
    }
    assert_eq!(post_count(&app).await, before + 3);
}

// ---------------------------------------------------------------------------------------------------------------
// Malformed bodies
// ---------------------------------------------------------------------------------------------------------------

/// Bodies that are not a GraphQL request are a 400 with a GraphQL-shaped, coded error in the negotiated type,
/// whichever it is; none is a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_coded_400s_never_500s() {
    let app = TestApp::spawn().await;
    let q = "{ posts { totalCount } }";
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "BAD_REQUEST"),
        ("".into(), "BAD_REQUEST"),
        ("\u{feff}\u{0}".into(), "BAD_REQUEST"),
        (
            json!([{ "query": q }, { "query": q }]).to_string(),
            "BATCH_NOT_SUPPORTED",
        ),
        ("[]".into(), "BATCH_NOT_SUPPORTED"),
        (json!(q).to_string(), "BAD_REQUEST"),
        ("42".into(), "BAD_REQUEST"),
        ("null".into(), "BAD_REQUEST"),
        (json!({ "query": 1 }).to_string(), "BAD_REQUEST"),
        (json!({ "query": ["{ a }"] }).to_string(), "BAD_REQUEST"),
        (json!({ "query": null }).to_string(), "BAD_REQUEST"),
        (
            json!({ "query": q, "variables": [] }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "query": q, "variables": "{}" }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "query": q, "variables": 7 }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "query": q, "operationName": 5 }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "query": q, "operationName": {} }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "query": q, "extensions": [] }).to_string(),
            "BAD_REQUEST",
        ),
        (
            json!({ "query": q, "extensions": "x" }).to_string(),
            "BAD_REQUEST",
        ),
        ("{}".into(), "BAD_REQUEST"),
        (json!({ "variables": {} }).to_string(), "BAD_REQUEST"),
    ];
    for (body, code) in &cases {
        for accept in [GQL_RESPONSE, JSON] {
            let a = post_raw(&app, Some(JSON), Some(accept), body.clone()).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {a:?}");
            assert_eq!(a.code(), *code, "{body}: {a:?}");
            assert!(a.body["errors"][0]["message"].is_string(), "{body}: {a:?}");
            assert!(a.body.get("data").is_none(), "{body}: {a:?}");
            assert!(a.content_type().starts_with(accept), "{body}: {a:?}");
        }
    }
    // Well-formed after all: `null` members count as absent.
    let body = json!({ "query": q, "variables": null, "operationName": null, "extensions": null });
    let a = post_raw(&app, Some(JSON), Some(GQL_RESPONSE), body.to_string()).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["data"]["posts"]["totalCount"], 0, "{a:?}");

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        !metrics.contains("folio_http_requests_total{status=\"500\"}"),
        "no request may end in a 500: {metrics}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// GET
// ---------------------------------------------------------------------------------------------------------------

/// GET runs the query a document's `operationName` picks, with variables; picking the document's mutation is a
/// 405 with `Allow: POST` and writes nothing, as is a plain mutation with a valid token. Malformed `variables`
/// or `extensions` are a coded 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_runs_queries_only_and_never_a_mutation() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let token = token_for(f.alice);
    let before = post_count(&app).await;
    let doc = r#"query Titles($n: Int!) { posts(first: $n) { nodes { title } } }
        mutation Write { createPost(input: { title: "Via GET", content: "Must not be written." }) { id } }"#;

    // The query of a document that also holds a mutation.
    let a = get_graphql(
        &app,
        &[
            ("query", doc),
            ("operationName", "Titles"),
            ("variables", r#"{"n": 1}"#),
        ],
        Some(GQL_RESPONSE),
        Some(&token),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert!(a.content_type().starts_with(GQL_RESPONSE), "{a:?}");
    assert_eq!(
        a.body["data"]["posts"]["nodes"].as_array().map(Vec::len),
        Some(1),
        "{a:?}"
    );

    // Its mutation, and a lone mutation, with and without a token and in both response types.
    let lone = CREATE_POST;
    let attempts: [&[(&str, &str)]; 3] = [
        &[("query", doc), ("operationName", "Write")],
        &[("query", lone)],
        &[("query", lone), ("variables", "{}")],
    ];
    for params in attempts {
        for accept in [GQL_RESPONSE, JSON] {
            for token in [Some(token.as_str()), None] {
                let a = get_graphql(&app, params, Some(accept), token).await;
                a.assert_request_error(StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED");
                assert_eq!(a.header("allow"), Some("POST"), "{a:?}");
            }
        }
    }
    assert_eq!(post_count(&app).await, before, "a GET wrote a post");

    // Malformed parameters.
    let bad: [&[(&str, &str)]; 5] = [
        &[("query", "{ __typename }"), ("variables", "{bad")],
        &[("query", "{ __typename }"), ("variables", "[1]")],
        &[("query", "{ __typename }"), ("variables", "\"x\"")],
        &[("query", "{ __typename }"), ("extensions", "[")],
        &[("operationName", "Titles")],
    ];
    for params in bad {
        for accept in [GQL_RESPONSE, JSON] {
            let a = get_graphql(&app, params, Some(accept), None).await;
            a.assert_request_error(StatusCode::BAD_REQUEST, "BAD_REQUEST");
            assert!(a.content_type().starts_with(accept), "{params:?}: {a:?}");
        }
    }

    // A validation failure over GET follows the same status rules as over POST.
    let a = get_graphql(
        &app,
        &[("query", "{ posts { nope } }")],
        Some(GQL_RESPONSE),
        None,
    )
    .await;
    a.assert_request_error(StatusCode::BAD_REQUEST, "GRAPHQL_VALIDATION_FAILED");
    let a = get_graphql(&app, &[("query", "{ posts { nope } }")], Some(JSON), None).await;
    a.assert_request_error(StatusCode::OK, "GRAPHQL_VALIDATION_FAILED");
}

// ---------------------------------------------------------------------------------------------------------------
// Abuse limits, each just under and just over
// ---------------------------------------------------------------------------------------------------------------

/// `{"query":"{ __typename }"}` padded with JSON whitespace to exactly `len` bytes.
fn body_of_len(len: usize) -> String {
    let base = json!({ "query": "{ __typename }" }).to_string();
    assert!(len >= base.len());
    format!("{base}{}", " ".repeat(len - base.len()))
}

/// The body limit is enforced on the bytes read (async-graphql's extractor is not used, so axum's default
/// limit would not apply): at the limit the request runs, one byte over it is 413 `PAYLOAD_TOO_LARGE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_limit() {
    let app = spawn_configured(|c| c.edge.max_body_bytes = 256).await;
    let a = post_raw(&app, Some(JSON), Some(GQL_RESPONSE), body_of_len(256)).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["data"]["__typename"], "Query");
    for accept in [GQL_RESPONSE, JSON] {
        let a = post_raw(&app, Some(JSON), Some(accept), body_of_len(257)).await;
        a.assert_request_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
        assert!(a.content_type().starts_with(accept), "{a:?}");
    }
    // Without a Content-Length (a chunked body, length unknown up front) the limit holds all the same.
    let chunk = |data: &str| format!("{:x}\r\n{data}\r\n", data.len());
    let under = body_of_len(256);
    let (first, rest) = under.split_at(100);
    let chunked = format!("{}{}0\r\n\r\n", chunk(first), chunk(rest));
    let head = "Content-Type: application/json\r\nAccept: application/graphql-response+json\r\nTransfer-Encoding: chunked\r\n";
    let (status, _, body) = raw_exchange(&app, head, chunked.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let over = body_of_len(257);
    let (first, rest) = over.split_at(200);
    let chunked = format!("{}{}0\r\n\r\n", chunk(first), chunk(rest));
    let (status, _, body) = raw_exchange(&app, head, chunked.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(first_code(&body), "PAYLOAD_TOO_LARGE", "{body}");
}

/// The default body limit is 1 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_size_limit_defaults_to_one_mebibyte() {
    let app = TestApp::spawn().await;
    let a = post_raw(&app, Some(JSON), None, body_of_len(1024 * 1024)).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["data"]["__typename"], "Query");
    let a = post_raw(&app, Some(JSON), None, body_of_len(1024 * 1024 + 1)).await;
    a.assert_request_error(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE");
}

/// `{ __typename }` padded with insignificant whitespace to exactly `len` bytes.
fn document_of_len(len: usize) -> String {
    format!("{{ __typename{}}}", " ".repeat(len - "{ __typename}".len()))
}

/// The document (the `query` text) is limited separately from the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_size_limit() {
    let app = spawn_configured(|c| c.edge.max_document_bytes = 100).await;
    assert_eq!(
        assert_admitted(&app, &document_of_len(100)).await["__typename"],
        "Query"
    );
    assert_refused_as_request_error(&app, &document_of_len(101), "DOCUMENT_TOO_LARGE").await;
    // Over GET too.
    let a = get_graphql(
        &app,
        &[("query", &document_of_len(101))],
        Some(GQL_RESPONSE),
        None,
    )
    .await;
    a.assert_request_error(StatusCode::BAD_REQUEST, "DOCUMENT_TOO_LARGE");
}

/// `{ me { id id ... } }` with `ids` repetitions: 5 + `ids` tokens.
fn tokens_doc(ids: usize) -> String {
    format!("{{ me {{ {}}} }}", "id ".repeat(ids))
}

/// Tokens are counted like the lexer sees them: comments and commas are not tokens, a string is one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_limit() {
    let app = spawn_configured(|c| c.edge.max_tokens = 20).await;
    assert_admitted(&app, &tokens_doc(15)).await;
    assert_refused_as_request_error(&app, &tokens_doc(16), "TOO_MANY_TOKENS").await;
    // 20 tokens, plus a comment and commas that are not tokens.
    let with_comment = "# a comment with many words in it, none of them tokens\n{ me { id, id, } posts(filter: { search: \"one string token\" }) { totalCount } }";
    assert_admitted(&app, with_comment).await;
    let over = with_comment.replace("totalCount", "totalCount totalCount");
    assert_refused_as_request_error(&app, &over, "TOO_MANY_TOKENS").await;
}

/// Aliases are counted across the whole document, fragments included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_limit() {
    let app = spawn_configured(|c| c.edge.max_aliases = 3).await;
    let data = assert_admitted(&app, "{ a: __typename b: __typename c: __typename }").await;
    assert_eq!(data, json!({ "a": "Query", "b": "Query", "c": "Query" }));
    assert_refused_as_request_error(
        &app,
        "{ a: __typename b: __typename c: __typename d: __typename }",
        "TOO_MANY_ALIASES",
    )
    .await;
    assert_refused_as_request_error(
        &app,
        "{ a: __typename ...F } fragment F on Query { b: __typename posts { c: totalCount d: totalCount } }",
        "TOO_MANY_ALIASES",
    )
    .await;
}

/// Root fields of the operation, looking through fragment spreads and inline fragments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_field_limit() {
    let app = spawn_configured(|c| c.edge.max_root_fields = 3).await;
    assert_admitted(&app, "{ __typename me { id } posts { totalCount } }").await;
    assert_admitted(
        &app,
        "{ ...F } fragment F on Query { __typename me { id } posts { totalCount } }",
    )
    .await;
    for over in [
        r#"{ __typename me { id } posts { totalCount } user(id: "1") { id } }"#,
        r#"{ ...F } fragment F on Query { __typename me { id } posts { totalCount } user(id: "1") { id } }"#,
        r#"{ __typename ... on Query { me { id } posts { totalCount } } ...F } fragment F on Query { user(id: "1") { id } }"#,
    ] {
        assert_refused_as_request_error(&app, over, "TOO_MANY_ROOT_FIELDS").await;
    }
    // The limit is per operation: another operation in the document does not count.
    let doc = r#"query Small { __typename } query Big { __typename me { id } posts { totalCount } user(id: "1") { id } }"#;
    let a = post_raw(
        &app,
        Some(JSON),
        Some(GQL_RESPONSE),
        json!({ "query": doc, "operationName": "Small" }).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["data"]["__typename"], "Query", "{a:?}");
}

/// Depth counts nested fields, fragments included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn depth_limit() {
    let app = spawn_configured(|c| c.max_depth = 4).await;
    assert_admitted(&app, "{ posts { nodes { author { name } } } }").await;
    for over in [
        "{ posts { nodes { author { posts { totalCount } } } } }",
        "{ posts { nodes { ...P } } } fragment P on Post { author { posts { totalCount } } }",
    ] {
        assert_refused_as_request_error(&app, over, "GRAPHQL_VALIDATION_FAILED").await;
        let a = post_query(&app, Some(GQL_RESPONSE), over).await;
        let message = a.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("deep"), "names the limit: {a:?}");
    }
}

/// Complexity counts a connection's children `first` times: `posts(first: N) { totalCount }` costs N.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complexity_limit() {
    let app = spawn_configured(|c| c.max_complexity = 50).await;
    assert_admitted(&app, "{ posts(first: 50) { totalCount } }").await;
    assert_admitted(&app, "{ posts(first: 25) { totalCount totalCount } }").await;
    for over in [
        "{ posts(first: 51) { totalCount } }",
        "{ posts(first: 26) { totalCount totalCount } }",
        "{ posts(first: 10) { totalCount } users: posts(first: 41) { totalCount } }",
    ] {
        assert_refused_as_request_error(&app, over, "GRAPHQL_VALIDATION_FAILED").await;
        let a = post_query(&app, Some(GQL_RESPONSE), over).await;
        let message = a.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("complex"), "names the limit: {a:?}");
    }
    // `first` from a variable counts the same.
    let a = post_raw(
        &app,
        Some(JSON),
        Some(GQL_RESPONSE),
        json!({ "query": "query($n: Int!) { posts(first: $n) { totalCount } }", "variables": { "n": 51 } })
            .to_string(),
    )
    .await;
    a.assert_request_error(StatusCode::BAD_REQUEST, "GRAPHQL_VALIDATION_FAILED");
}

/// Directives on one field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directives_per_field_limit() {
    let app = spawn_configured(|c| c.edge.max_directives = 2).await;
    let data = assert_admitted(
        &app,
        "{ __typename @include(if: true) @skip(if: false) posts @skip(if: false) @include(if: true) { totalCount } }",
    )
    .await;
    assert_eq!(data["__typename"], "Query");
    for over in [
        "{ __typename @include(if: true) @skip(if: false) @include(if: true) }",
        "{ posts { totalCount @skip(if: false) @include(if: true) @skip(if: false) } }",
        "{ ...F } fragment F on Query { __typename @skip(if: false) @include(if: true) @skip(if: false) }",
    ] {
        assert_refused_as_request_error(&app, over, "GRAPHQL_VALIDATION_FAILED").await;
        let a = post_query(&app, Some(GQL_RESPONSE), over).await;
        let message = a.body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains("directives"), "names the limit: {a:?}");
    }
}

/// The page-size cap of the core stays: `first: 100` runs, `first: 101` is `BAD_USER_INPUT` on the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_size_limit() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 101, 0).await;
    let data = assert_admitted(&app, "{ posts(first: 100) { nodes { id } } }").await;
    assert_eq!(data["posts"]["nodes"].as_array().map(Vec::len), Some(100));
    for accept in [GQL_RESPONSE, JSON] {
        let a = post_query(&app, Some(accept), "{ posts(first: 101) { nodes { id } } }").await;
        assert_eq!(a.status, StatusCode::OK, "a field error: {a:?}");
        assert_eq!(a.code(), "BAD_USER_INPUT", "{a:?}");
        assert_eq!(a.body["errors"][0]["path"], json!(["posts"]), "{a:?}");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Execution timeout
// ---------------------------------------------------------------------------------------------------------------

/// A query far heavier than `{ __typename }`: 100 posts × 20 comments × the 20 comments of each comment's post ×
/// the 20 comments of each of those comments' post, 800,000 comments with their authors. Whole seconds of work on
/// any machine, so the timeout fires before it ends however fast the database is (one level less finished inside
/// 300 ms on PostgreSQL on a fast machine).
const HEAVY: &str = "{ posts(first: 100) { nodes { comments(first: 100) { nodes { post { comments(first: 100) { nodes { post { comments(first: 100) { nodes { body author { name } } } } } } } } } } } }";

/// A query that runs past `FOLIO_REQUEST_TIMEOUT_MS` is stopped with 504 `TIMEOUT`; its work stops (no further
/// statements) and its connection goes back to the pool: on a pool of one, a cheap query right after succeeds
/// well within the acquire timeout. The cache is off so every query really executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_timeout_is_504_and_frees_its_connection() {
    let timeout = Duration::from_millis(300);
    let app = spawn_configured(|c| {
        c.edge.request_timeout = timeout;
        c.db_max_connections = 1;
        c.db_acquire_timeout = Duration::from_secs(1);
        c.max_complexity = usize::MAX;
        c.max_depth = usize::MAX;
        c.cache.mode = CacheMode::Off;
    })
    .await;
    bulk(&app.store, 100, 20).await;

    for accept in [GQL_RESPONSE, JSON] {
        let started = Instant::now();
        let a = post_query(&app, Some(accept), HEAVY).await;
        let elapsed = started.elapsed();
        assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{:?}", a.status);
        assert_eq!(a.code(), "TIMEOUT", "{}", a.text);
        assert!(a.body.get("data").is_none(), "{}", a.text);
        assert!(a.content_type().starts_with(accept), "{a:?}");
        assert!(
            elapsed >= timeout && elapsed < timeout + Duration::from_secs(2),
            "answered when the timeout ran out, not when the work finished: {elapsed:?}"
        );
        let statements = app.metric("folio_db_statements_total").await;

        // Same app, same single connection: cheap work goes through at once.
        let started = Instant::now();
        let data = assert_admitted(
            &app,
            "{ posts(first: 1) { totalCount nodes { author { name } } } }",
        )
        .await;
        assert_eq!(data["posts"]["totalCount"], 100);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the timed-out request's connection was back in the pool: {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The cheap query's statements (count, page, author) and nothing the stopped execution ran afterwards.
        let later = app.metric("folio_db_statements_total").await;
        let cheap = later - statements;
        assert!(
            cheap <= 4.0,
            "the stopped execution kept running statements: {cheap}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// CORS
// ---------------------------------------------------------------------------------------------------------------

/// A browser's preflight for a JSON POST from `origin`.
async fn preflight(app: &TestApp, origin: &str) -> Answer {
    let res = app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}/graphql", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight");
    answer(res).await
}

/// Development allows any origin; a configured list allows exactly its origins; an empty list (the production
/// default) none. A disallowed origin also gets no `Access-Control-Allow-Origin` on the actual response, so a
/// hostile page can neither send JSON (no preflight pass) nor read what a GET returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_the_configured_origins_only() {
    let dev = TestApp::spawn().await;
    let a = preflight(&dev, "https://evil.example").await;
    assert!(a.status.is_success(), "{a:?}");
    assert_eq!(a.header("access-control-allow-origin"), Some("*"), "{a:?}");
    let methods = a.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{a:?}");
    let headers = a
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        headers.contains("content-type") && headers.contains("authorization"),
        "{a:?}"
    );
    assert!(
        a.header("access-control-allow-credentials").is_none(),
        "credentials are bearer tokens, never cookies: {a:?}"
    );

    let listed =
        spawn_configured(|c| c.edge.cors_origins = vec!["https://app.example".into()]).await;
    let a = preflight(&listed, "https://app.example").await;
    assert!(a.status.is_success(), "{a:?}");
    assert_eq!(
        a.header("access-control-allow-origin"),
        Some("https://app.example"),
        "{a:?}"
    );
    let a = preflight(&listed, "https://evil.example").await;
    assert!(a.header("access-control-allow-origin").is_none(), "{a:?}");
    // The actual response to a cross-origin GET: readable by the listed origin only.
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let res = listed
            .client
            .get(format!("{}/graphql", listed.base))
            .query(&[("query", "{ __typename }")])
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let allow = res.headers().get("access-control-allow-origin");
        assert_eq!(allow.is_some(), allowed, "{origin}: {:?}", res.headers());
    }

    let none = spawn_configured(|c| c.edge.cors_origins = Vec::new()).await;
    for origin in ["https://app.example", "https://evil.example", "null"] {
        let a = preflight(&none, origin).await;
        assert!(
            a.header("access-control-allow-origin").is_none(),
            "{origin}: {a:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Rate limiting
// ---------------------------------------------------------------------------------------------------------------

/// Rate limiting on: bursts of 5, then one request every 10 s (slow enough that no token refills while a test
/// runs, however slow the machine).
fn limited(c: &mut Config) {
    c.edge.rate_per_min = 6;
    c.edge.rate_burst = 5;
}

/// `{ __typename }` anonymously with extra headers (or as `token`'s user).
async fn ping(app: &TestApp, token: Option<&str>, headers: &[(&str, &str)]) -> Answer {
    post_as(app, token, headers, "{ __typename }", json!({})).await
}

/// Asserts a 429 the way clients rely on it: `Retry-After` in whole seconds (at least 1, and no more than the
/// 10 s one token takes to refill) and the code `RATE_LIMITED`.
fn assert_rate_limited(a: &Answer) {
    a.assert_request_error(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let secs = a.retry_after();
    assert!((1..=10).contains(&secs), "Retry-After {secs}: {a:?}");
}

/// The burst passes, the next request is 429 with `Retry-After`; a signed-in user has a bucket of their own; the
/// refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_a_caller_gets_429_with_retry_after() {
    let app = spawn_configured(limited).await;
    let f = Fixture::create(&app.store).await;
    for i in 0..5 {
        let a = ping(&app, None, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "request {i} of the burst: {a:?}");
    }
    let a = ping(&app, None, &[]).await;
    assert_rate_limited(&a);
    // Under the strict type too, and over GET.
    let a = post_as(
        &app,
        None,
        &[("accept", GQL_RESPONSE)],
        "{ __typename }",
        json!({}),
    )
    .await;
    assert_rate_limited(&a);
    assert!(a.content_type().starts_with(GQL_RESPONSE), "{a:?}");
    let a = get_graphql(&app, &[("query", "{ __typename }")], None, None).await;
    assert_rate_limited(&a);

    // Alice's bucket is hers, not her address's.
    let alice = token_for(f.alice);
    for i in 0..5 {
        let a = ping(&app, Some(&alice), &[]).await;
        assert_eq!(a.status, StatusCode::OK, "Alice's request {i}: {a:?}");
    }
    assert_rate_limited(&ping(&app, Some(&alice), &[]).await);
    // Bob's is his.
    let bob = token_for(f.bob);
    assert_eq!(ping(&app, Some(&bob), &[]).await.status, StatusCode::OK);
    // And the address is still limited.
    assert_rate_limited(&ping(&app, None, &[]).await);

    assert_eq!(app.metric("folio_rate_limited_total").await, 5.0);
    // Health and metrics are not GraphQL requests and are never limited.
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// Behind one trusted proxy the client is the address that proxy saw (the rightmost `X-Forwarded-For` entry):
/// each client has its own bucket, and entries the client wrote itself further left change nothing. With no
/// trusted proxy the header is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    let app = spawn_configured(|c| {
        limited(c);
        c.edge.trusted_proxies = 1;
    })
    .await;
    let xff = |v: &'static str| [("x-forwarded-for", v)];
    for _ in 0..5 {
        assert_eq!(ping(&app, None, &xff("203.0.113.1")).await.status, 200);
    }
    assert_rate_limited(&ping(&app, None, &xff("203.0.113.1")).await);
    // Spoofed entries to the left: still 203.0.113.1.
    assert_rate_limited(&ping(&app, None, &xff("198.51.100.7, 203.0.113.1")).await);
    assert_rate_limited(&ping(&app, None, &xff("198.51.100.8,203.0.113.1")).await);
    // Another client behind the proxy.
    for _ in 0..5 {
        assert_eq!(ping(&app, None, &xff("203.0.113.2")).await.status, 200);
    }
    assert_rate_limited(&ping(&app, None, &xff("203.0.113.2")).await);
    // The proxy's own address (no header) is a third bucket.
    assert_eq!(ping(&app, None, &[]).await.status, 200);

    let direct = spawn_configured(limited).await;
    for i in 0..5 {
        let v = format!("203.0.113.{}", 10 + i);
        let a = ping(&direct, None, &[("x-forwarded-for", v.as_str())]).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    assert_rate_limited(&ping(&direct, None, &xff("203.0.113.99")).await);
}

/// Two instances on one Redis share each caller's bucket: three requests through A and three through B, and the
/// sixth is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_redis_share_the_buckets() {
    if !uses_redis() {
        eprintln!(
            "skipped: instances share rate limits only through Redis (set FOLIO_TEST_REDIS_URL to run this)"
        );
        return;
    }
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    limited(&mut config);
    let a = TestApp::spawn_with(db, config.clone()).await;
    let b = spawn_instance(config).await;
    for _ in 0..3 {
        assert_eq!(ping(&a, None, &[]).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(ping(&b, None, &[]).await.status, 200);
    }
    assert_rate_limited(&ping(&b, None, &[]).await);
    assert_rate_limited(&ping(&a, None, &[]).await);
    assert_eq!(b.metric("folio_rate_limited_total").await, 1.0);
}

/// Redis unreachable: the limiter fails open (every request is answered) and counts the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_fail_open_when_redis_is_down() {
    let app = spawn_configured(|c| {
        limited(c);
        c.cache.mode = CacheMode::Redis;
        c.cache.redis = Some(RedisTarget::Url("redis://127.0.0.1:1".to_owned().into()));
        c.cache.redis_timeout = Duration::from_millis(100);
    })
    .await;
    for i in 0..8 {
        let a = ping(&app, None, &[]).await;
        assert_eq!(a.status, StatusCode::OK, "request {i}: {a:?}");
    }
    assert!(app.metric("folio_rate_limit_errors_total").await > 0.0);
    assert_eq!(app.metric("folio_rate_limited_total").await, 0.0);
}

// ---------------------------------------------------------------------------------------------------------------
// Login throttling
// ---------------------------------------------------------------------------------------------------------------

const SIGN_UP: &str = "mutation($i: SignUpInput!) { signUp(input: $i) { token } }";
const LOGIN: &str = "mutation($i: LoginInput!) { login(input: $i) { token } }";
const PASSWORD: &str = "correct horse battery staple";

async fn sign_up(app: &TestApp, email: &str) {
    let a = post_as(
        app,
        None,
        &[],
        SIGN_UP,
        json!({ "i": { "email": email, "name": "Someone", "password": PASSWORD } }),
    )
    .await;
    assert!(a.body["data"]["signUp"]["token"].is_string(), "{a:?}");
}

async fn login(app: &TestApp, email: &str, password: &str) -> Answer {
    post_as(
        app,
        None,
        &[],
        LOGIN,
        json!({ "i": { "email": email, "password": password } }),
    )
    .await
}

/// Three wrong passwords for one email, then even the right one is refused with 429 until the bucket refills; the
/// check is per email (case-insensitively), so another account is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_throttled_per_email() {
    let app = spawn_configured(|c| c.edge.login_attempts = 3).await;
    sign_up(&app, "victim@example.com").await;
    sign_up(&app, "bystander@example.com").await;
    for i in 0..3 {
        let a = login(&app, "victim@example.com", "wrong password").await;
        assert_eq!(a.status, StatusCode::OK, "attempt {i}: {a:?}");
        assert_eq!(a.code(), "UNAUTHENTICATED", "attempt {i}: {a:?}");
    }
    for email in ["victim@example.com", " Victim@EXAMPLE.com "] {
        let a = login(&app, email, PASSWORD).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{email}: {a:?}");
        assert_eq!(a.code(), "RATE_LIMITED", "{a:?}");
        let secs = a.retry_after();
        // One attempt refills every 15 min / 3 = 300 s.
        assert!((1..=300).contains(&secs), "Retry-After {secs}: {a:?}");
        assert!(a.text.find("\"token\"").is_none(), "{a:?}");
    }

    let a = login(&app, "bystander@example.com", "wrong password").await;
    assert_eq!(a.code(), "UNAUTHENTICATED", "{a:?}");
    let a = login(&app, "bystander@example.com", PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert!(a.body["data"]["login"]["token"].is_string(), "{a:?}");
}

/// Many accounts from one address: five times the per-email allowance, then every email is refused from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_throttled_per_address() {
    let app = spawn_configured(|c| c.edge.login_attempts = 1).await;
    sign_up(&app, "last@example.com").await;
    for i in 0..5 {
        let a = login(&app, &format!("guess{i}@example.com"), "wrong password").await;
        assert_eq!(a.code(), "UNAUTHENTICATED", "attempt {i}: {a:?}");
    }
    let a = login(&app, "last@example.com", PASSWORD).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{a:?}");
    assert_eq!(a.code(), "RATE_LIMITED", "{a:?}");
    assert!(a.retry_after() >= 1);
}

async fn login_from(app: &TestApp, address: &str, email: &str, password: &str) -> Answer {
    post_as(
        app,
        None,
        &[("x-forwarded-for", address)],
        LOGIN,
        json!({ "i": { "email": email, "password": password } }),
    )
    .await
}

/// Wrong passwords for one account from many addresses (a distributed guess) exhaust the account's slow bucket
/// for addresses it has never signed in from; the owner still signs in from where she signed up, at once, and
/// only a new address of hers has to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_from_elsewhere_never_lock_the_owner_out() {
    let app = spawn_configured(|c| {
        c.edge.login_attempts = 2;
        c.edge.trusted_proxies = 1;
    })
    .await;
    // Signed up (and so known) from 127.0.0.1: no X-Forwarded-For, the peer's address.
    sign_up(&app, "owner@example.com").await;
    let mut refused = 0;
    for i in 0..20 {
        let a = login_from(
            &app,
            &format!("203.0.113.{i}"),
            "owner@example.com",
            "wrong",
        )
        .await;
        match a.code() {
            "UNAUTHENTICATED" => assert_eq!(refused, 0, "attempt {i}: {a:?}"),
            "RATE_LIMITED" => refused += 1,
            other => panic!("attempt {i}: {other} {a:?}"),
        }
    }
    // Three times the setting (6) got through from unknown addresses; the rest were refused.
    assert_eq!(refused, 14);
    let a = login_from(&app, "127.0.0.1", "owner@example.com", PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert!(a.body["data"]["login"]["token"].is_string(), "{a:?}");
    // A new address of the owner's waits with everyone else's.
    let a = login_from(&app, "198.51.100.7", "owner@example.com", PASSWORD).await;
    assert_eq!(a.code(), "RATE_LIMITED", "{a:?}");
    // The flood for one account leaves the others alone.
    sign_up(&app, "other@example.com").await;
    let a = login_from(&app, "203.0.113.99", "other@example.com", PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
}

/// `signUp` is limited per client address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_is_throttled_per_address() {
    let app = spawn_configured(|c| {
        c.edge.signups_per_hour = 2;
        c.edge.trusted_proxies = 1;
    })
    .await;
    let from = |address: &'static str, email: &'static str| {
        let app = &app;
        async move {
            post_as(
                app,
                None,
                &[("x-forwarded-for", address)],
                SIGN_UP,
                json!({ "i": { "email": email, "name": "Someone", "password": PASSWORD } }),
            )
            .await
        }
    };
    assert!(from("10.0.0.1", "a@example.com").await.body["data"]["signUp"]["token"].is_string());
    assert!(from("10.0.0.1", "b@example.com").await.body["data"]["signUp"]["token"].is_string());
    let a = from("10.0.0.1", "c@example.com").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{a:?}");
    assert_eq!(a.code(), "RATE_LIMITED", "{a:?}");
    // Nothing was created for the refused call; another address may sign up.
    let a = from("10.0.0.2", "c@example.com").await;
    assert!(a.body["data"]["signUp"]["token"].is_string(), "{a:?}");
}

// ---------------------------------------------------------------------------------------------------------------
// Production mode and secrets
// ---------------------------------------------------------------------------------------------------------------

/// A production configuration as `FOLIO_ENV=production` plus `vars` give it, on `db` and the test cache backend.
fn production_config(db: &TestDb, vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = [
        ("FOLIO_ENV", "production"),
        ("DATABASE_URL", db.url()),
        ("FOLIO_BIND", "127.0.0.1:0"),
        ("FOLIO_DEMO_DATA", "false"),
        ("FOLIO_RATE_LIMIT_PER_MIN", "0"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let (true, Ok(url)) = (uses_redis(), std::env::var("FOLIO_TEST_REDIS_URL")) {
        map.insert("REDIS_URL".into(), url);
        map.insert(
            "FOLIO_CACHE_PREFIX".into(),
            format!("folio-test:{}:", uuid::Uuid::new_v4().simple()),
        );
    }
    for (k, v) in vars {
        map.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| map.get(k).cloned()).expect("production config")
}

/// One rule for the schema's definition in production: `_service { sdl }` and `GET /schema.graphql` only to a
/// request presenting `FOLIO_GATEWAY_SECRET` (and `/schema.graphql` on the admin listener); a gateway's answer is
/// never cached for others. Metrics only on the admin listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_reveals_the_sdl_only_to_the_gateway_and_serves_metrics_only_to_operators() {
    let secret = format!("prod-secret-{}", uuid::Uuid::new_v4().simple());
    let gateway = format!("gateway-{}", uuid::Uuid::new_v4().simple());
    let db = TestDb::create().await;
    let config = production_config(
        &db,
        &[
            ("FOLIO_JWT_SECRET", &secret),
            ("FOLIO_GATEWAY_SECRET", &gateway),
            ("FOLIO_ADMIN_BIND", "127.0.0.1:0"),
        ],
    );
    let prod = TestApp::spawn_with(db, config).await;
    let sdl_queries = [
        "{ _service { sdl } }",
        "query Compose { ... on Query { _service { sdl } } }",
        "{ ...S } fragment S on Query { s: _service { sdl } }",
    ];
    for query in sdl_queries {
        for headers in [vec![], vec![("x-folio-gateway-secret", "wrong")]] {
            let a = post_as(&prod, None, &headers, query, json!({})).await;
            assert_eq!(a.code(), "INTROSPECTION_DISABLED", "{query}: {a:?}");
            assert!(!a.text.contains("type Post"), "{a:?}");
        }
        let a = post_as(
            &prod,
            None,
            &[("x-folio-gateway-secret", gateway.as_str())],
            query,
            json!({}),
        )
        .await;
        assert!(
            a.text.contains("type Post"),
            "the gateway gets the SDL: {a:?}"
        );
        // Asked again without the secret: refused, not answered from a cached copy.
        let a = post_as(&prod, None, &[], query, json!({})).await;
        assert_eq!(a.code(), "INTROSPECTION_DISABLED", "{query}: {a:?}");
    }
    let public = |path: &str, secret: Option<&str>| {
        let mut req = prod.client.get(format!("{}{path}", prod.base));
        if let Some(secret) = secret {
            req = req.header("x-folio-gateway-secret", secret);
        }
        req.send()
    };
    assert_eq!(public("/schema.graphql", None).await.unwrap().status(), 404);
    assert_eq!(
        public("/schema.graphql", Some("wrong"))
            .await
            .unwrap()
            .status(),
        404
    );
    let res = public("/schema.graphql", Some(&gateway)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("type Post"));
    assert_eq!(public("/metrics", None).await.unwrap().status(), 404);

    let admin = prod.admin.clone().expect("an admin listener");
    let get = |path: &str| prod.client.get(format!("{admin}{path}")).send();
    let res = get("/metrics").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("folio_http_requests_total")
    );
    let res = get("/schema.graphql").await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("type Post"));
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    // The admin listener runs no GraphQL.
    assert_eq!(get("/graphql").await.unwrap().status(), 404);
}

/// In production, introspection and field suggestions are off (both would map the schema for an attacker),
/// GraphiQL is not served and CORS admits no origin; the service otherwise works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_hides_the_schema() {
    let secret = format!("prod-secret-{}", uuid::Uuid::new_v4().simple());
    let db = TestDb::create().await;
    let config = production_config(&db, &[("FOLIO_JWT_SECRET", &secret)]);
    assert_eq!(config.env, Environment::Production);
    let prod = TestApp::spawn_with(db, config).await;
    let dev = TestApp::spawn().await;

    for query in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"Post\") { name fields { name } } }",
        "{ posts { totalCount } __schema { queryType { name } } }",
    ] {
        // Nothing about the schema comes back. (async-graphql answers `null` rather than an error; see the report.)
        let a = post_query(&prod, Some(GQL_RESPONSE), query).await;
        assert!(
            a.body["data"]["__schema"].is_null() && a.body["data"]["__type"].is_null(),
            "{query}: {a:?}"
        );
        assert!(
            !a.text.contains("\"Post\"") && !a.text.contains("queryType"),
            "{a:?}"
        );
        // Development serves it.
        let a = post_query(&dev, Some(GQL_RESPONSE), query).await;
        assert!(a.body.get("errors").is_none(), "{query}: {a:?}");
        assert!(
            !a.body["data"]["__schema"].is_null() || !a.body["data"]["__type"].is_null(),
            "{a:?}"
        );
    }
    // `__typename` is not introspection: clients need it.
    assert_eq!(
        assert_admitted(&prod, "{ __typename }").await["__typename"],
        "Query"
    );

    // Misspellings close enough for development to suggest the real name.
    for misspelled in [
        "{ posts { totalCont } }",
        "{ postss { totalCount } }",
        "{ posts(firsts: 1) { totalCount } }",
    ] {
        let d = post_query(&dev, Some(GQL_RESPONSE), misspelled).await;
        assert!(
            d.text.contains("Did you mean"),
            "development suggests: {d:?}"
        );
        let p = post_query(&prod, Some(GQL_RESPONSE), misspelled).await;
        p.assert_request_error(StatusCode::BAD_REQUEST, "GRAPHQL_VALIDATION_FAILED");
        assert!(!p.text.contains("Did you mean"), "{misspelled}: {p:?}");
        assert!(
            !p.text.contains("totalCount\"?") && !p.text.contains("\"first\"?"),
            "{p:?}"
        );
    }

    // No playground.
    let res = prod
        .client
        .get(format!("{}/graphql", prod.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200);
    assert!(
        !res.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
    // No origin.
    let a = preflight(&prod, "https://evil.example").await;
    assert!(a.header("access-control-allow-origin").is_none(), "{a:?}");

    // Accounts and tokens work: production is locked down, not broken.
    let a = post_as(
        &prod,
        None,
        &[],
        SIGN_UP,
        json!({ "i": { "email": "p@example.com", "name": "P", "password": PASSWORD } }),
    )
    .await;
    let token = a.body["data"]["signUp"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let a = post_as(&prod, Some(&token), &[], "{ me { email } }", json!({})).await;
    assert_eq!(a.body["data"]["me"]["email"], "p@example.com", "{a:?}");
}

/// `FOLIO_INTROSPECTION=true` and `FOLIO_GRAPHIQL=true` turn them back on in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_can_enable_introspection_and_graphiql() {
    let secret = format!("prod-secret-{}", uuid::Uuid::new_v4().simple());
    let db = TestDb::create().await;
    let config = production_config(
        &db,
        &[
            ("FOLIO_JWT_SECRET", &secret),
            ("FOLIO_INTROSPECTION", "true"),
            ("FOLIO_GRAPHIQL", "true"),
        ],
    );
    let app = TestApp::spawn_with(db, config).await;
    let data = assert_admitted(&app, "{ __type(name: \"Post\") { name } }").await;
    assert_eq!(data["__type"]["name"], "Post");
    let data = assert_admitted(&app, "{ __schema { queryType { name } } }").await;
    assert_eq!(data["__schema"]["queryType"]["name"], "Query");
    let res = app
        .client
        .get(format!("{}/graphql", app.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.text()
            .await
            .unwrap()
            .to_lowercase()
            .contains("graphiql")
    );
}

/// The JWT secret and the Stripe webhook secret never reach a client: not in `/metrics`, the schema, any error
/// a client can provoke, nor the configuration's debug output (what ends up in logs). A password in `REDIS_URL`
/// is held the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_appear() {
    let jwt_secret = format!("jwt-secret-{}", uuid::Uuid::new_v4().simple());
    let stripe_secret = format!("whsec_{}", uuid::Uuid::new_v4().simple());
    let db = TestDb::create().await;
    let config = production_config(
        &db,
        &[
            ("FOLIO_JWT_SECRET", &jwt_secret),
            ("STRIPE_WEBHOOK_SECRET", &stripe_secret),
        ],
    );
    let shown = format!("{config:?}");
    let app = TestApp::spawn_with(db, config).await;
    Fixture::create(&app.store).await;

    let mut seen: Vec<(String, String)> = vec![("config debug output".into(), shown)];
    let mut record = |what: &str, a: &Answer| {
        let headers = format!("{:?}", a.headers);
        seen.push((what.to_owned(), format!("{headers}\n{}", a.text)));
    };

    let text = |res: reqwest::Response| async move { answer(res).await };
    record("/metrics", &text(app.get("/metrics").await).await);
    record(
        "/schema.graphql",
        &text(app.get("/schema.graphql").await).await,
    );
    record("/readyz", &text(app.get("/readyz").await).await);
    // Tokens that do not verify, including one signed with the development secret and a forged one.
    let dev_token = token_for(1);
    let forged = {
        let mut parts: Vec<&str> = dev_token.split('.').collect();
        parts[2] = "AAAA";
        parts.join(".")
    };
    for bad in ["garbage", "a.b.c", dev_token.as_str(), forged.as_str()] {
        let a = post_as(&app, Some(bad), &[], "{ me { id } }", json!({})).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
        record("a bad token", &a);
    }
    let a = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .json(&json!({ "query": "{ me { id } }" }))
        .send()
        .await
        .unwrap();
    record("a Basic authorization", &answer(a).await);
    // Errors from GraphQL itself.
    for (q, vars) in [
        ("{ posts { nope } }", json!({})),
        ("{ posts { ", json!({})),
        (
            LOGIN,
            json!({ "i": { "email": "alice@example.com", "password": "wrong" } }),
        ),
        ("{ users { totalCount } }", json!({})),
        (CREATE_POST, json!({})),
        ("{ __schema { types { name } } }", json!({})),
    ] {
        record(q, &post_as(&app, None, &[], q, vars).await);
    }
    // The Stripe webhook, refused in every way an unsigned caller can manage.
    let webhook = format!("{}/api/webhooks/stripe", app.base);
    for signature in [
        None,
        Some("t=1,v1=00".to_owned()),
        Some(format!(
            "t={},v1={}",
            chrono::Utc::now().timestamp(),
            "ab".repeat(32)
        )),
        Some("garbage".to_owned()),
    ] {
        let mut req = app
            .client
            .post(&webhook)
            .header("content-type", "application/json")
            .body(r#"{"id":"evt_1","type":"customer.subscription.updated"}"#);
        if let Some(signature) = signature {
            req = req.header("stripe-signature", signature);
        }
        let a = answer(req.send().await.unwrap()).await;
        assert!(a.status.is_client_error(), "{a:?}");
        record("the Stripe webhook", &a);
    }
    // After all of that, the metrics once more.
    record("/metrics", &text(app.get("/metrics").await).await);

    for (what, text) in &seen {
        assert!(
            !text.contains(&jwt_secret),
            "the JWT secret appears in {what}: {text}"
        );
        assert!(
            !text.contains(&stripe_secret),
            "the Stripe secret appears in {what}: {text}"
        );
        assert!(
            !text.contains("whsec_"),
            "a Stripe secret appears in {what}: {text}"
        );
    }

    // A password in REDIS_URL.
    let c = Config::from_lookup(|k| match k {
        "REDIS_URL" => Some("redis://:hunter2-redis-password@127.0.0.1:6379".to_owned()),
        _ => None,
    })
    .unwrap();
    assert!(!format!("{c:?}").contains("hunter2-redis-password"));
}

// ---------------------------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------------------------

/// Holds the database's write lock (SQLite) or the `posts` table (PostgreSQL) from a separate connection, so that
/// the app's `createPost` blocks with its only pooled connection.
enum Blocker {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl Blocker {
    async fn start(db: &TestDb) -> Self {
        if db.is_postgres() {
            let mut conn = sqlx::PgConnection::connect(db.url())
                .await
                .expect("connect");
            sqlx::raw_sql("BEGIN; LOCK TABLE posts IN ACCESS EXCLUSIVE MODE;")
                .execute(&mut conn)
                .await
                .expect("lock posts");
            Blocker::Postgres(conn)
        } else {
            let mut conn = sqlx::SqliteConnection::connect(db.url())
                .await
                .expect("connect");
            sqlx::raw_sql("BEGIN EXCLUSIVE")
                .execute(&mut conn)
                .await
                .expect("take the write lock");
            Blocker::Sqlite(conn)
        }
    }

    async fn release(self) {
        match self {
            Blocker::Sqlite(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("release");
            }
            Blocker::Postgres(mut conn) => {
                sqlx::raw_sql("ROLLBACK")
                    .execute(&mut conn)
                    .await
                    .expect("release");
            }
        }
    }
}

/// With the only pooled connection held by a blocked mutation, another request waits the acquire timeout and no
/// longer, then gets `SERVICE_UNAVAILABLE`; once the lock goes, the mutation completes and everything works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_answers_service_unavailable_within_the_acquire_timeout() {
    let acquire = Duration::from_millis(300);
    let app = Arc::new(
        spawn_configured(|c| {
            c.db_max_connections = 1;
            c.db_acquire_timeout = acquire;
            c.cache.mode = CacheMode::Off;
        })
        .await,
    );
    let f = Fixture::create(&app.store).await;
    let token = token_for(f.alice);
    let before = post_count(&app).await;

    let blocker = Blocker::start(&app.db).await;
    let writer = {
        let app = Arc::clone(&app);
        let token = token.clone();
        tokio::spawn(async move { post_as(&app, Some(&token), &[], CREATE_POST, json!({})).await })
    };
    // Let the mutation take the connection and block on the lock.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!writer.is_finished(), "the mutation is blocked on the lock");

    let user = format!(r#"{{ user(id: "{}") {{ name }} }}"#, f.bob);
    for _ in 0..2 {
        let started = Instant::now();
        let a = post_query(&app, Some(GQL_RESPONSE), &user).await;
        let elapsed = started.elapsed();
        assert_eq!(a.code(), "SERVICE_UNAVAILABLE", "{a:?}");
        assert_eq!(a.status, StatusCode::OK, "a field error: {a:?}");
        assert!(
            elapsed >= acquire - Duration::from_millis(50) && elapsed < Duration::from_secs(2),
            "waited about the acquire timeout: {elapsed:?}"
        );
    }
    // Readiness says the same within the acquire timeout.
    let started = Instant::now();
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(app.get("/healthz").await.status(), 200);

    blocker.release().await;
    let a = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the blocked mutation finishes once the lock is gone")
        .expect("task");
    assert!(a.body["data"]["createPost"]["id"].is_string(), "{a:?}");
    assert_eq!(post_count(&app).await, before + 1);
    let data = assert_admitted(&app, &user).await;
    assert_eq!(data["user"]["name"], "Bob Marley");
    assert_eq!(app.get("/readyz").await.status(), 200);
}

/// How the database is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outage {
    /// Nothing listens: new connections are refused (the server process is down).
    Refused,
    /// Connections are accepted, and closed cleanly as soon as the client has said its first word (a proxy or
    /// load balancer in front of a database that is down, or a server dying mid-handshake).
    ClosedOnArrival,
}

/// A TCP proxy between the app and PostgreSQL that a test can cut (dropping every open connection, and refusing
/// or closing new ones) and restore on the same port: the database going away and coming back, without
/// touching the server.
struct DbProxy {
    addr: SocketAddr,
    target: String,
    state: Arc<Mutex<ProxyState>>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct ProxyState {
    close_new: bool,
    connections: Vec<JoinHandle<()>>,
}

impl DbProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let accept = Self::serve(listener, target.clone(), Arc::clone(&state));
        Self {
            addr,
            target,
            state,
            accept: Mutex::new(Some(accept)),
        }
    }

    fn serve(
        listener: TcpListener,
        target: String,
        state: Arc<Mutex<ProxyState>>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut state = state.lock().expect("proxy state");
                if state.close_new {
                    // Read the client's first message (PostgreSQL's SSLRequest), then close cleanly: the client
                    // sees end-of-stream where it expects the server's answer. Dropping the socket with that
                    // message unread would send a reset instead, depending on timing.
                    tokio::spawn(async move {
                        let mut first = [0u8; 64];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(1), inbound.read(&mut first))
                                .await;
                        let _ = inbound.shutdown().await;
                    });
                    continue;
                }
                let target = target.clone();
                state.connections.retain(|c| !c.is_finished());
                state.connections.push(tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                }));
            }
        })
    }

    /// Drops every open connection; new ones are refused or closed on arrival.
    async fn cut(&self, outage: Outage) {
        {
            let mut state = self.state.lock().expect("proxy state");
            state.close_new = true;
            for connection in state.connections.drain(..) {
                connection.abort();
            }
        }
        if outage == Outage::Refused {
            let accept = self.accept.lock().expect("accept task").take();
            if let Some(accept) = accept {
                accept.abort();
                // The listening socket closes when the aborted task is dropped.
                let _ = accept.await;
            }
        }
    }

    /// Listens again (on the same port) and forwards new connections.
    async fn restore(&self) {
        self.state.lock().expect("proxy state").close_new = false;
        if self.accept.lock().expect("accept task").is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .expect("bind the proxy's port again");
            let accept = Self::serve(listener, self.target.clone(), Arc::clone(&self.state));
            *self.accept.lock().expect("accept task") = Some(accept);
        }
    }
}

impl Drop for DbProxy {
    fn drop(&mut self) {
        if let Some(accept) = self.accept.lock().expect("accept task").take() {
            accept.abort();
        }
        for connection in self
            .state
            .lock()
            .expect("proxy state")
            .connections
            .drain(..)
        {
            connection.abort();
        }
    }
}

/// PostgreSQL goes away under a running app: queries get `SERVICE_UNAVAILABLE` promptly, a signed-in request
/// (whose token cannot be checked against the database) a coded 503 rather than a 500, `/readyz` 503 and
/// `/healthz` 200; when it comes back the app serves again with no restart.
async fn database_down_and_back(outage: Outage) {
    let db = TestDb::create().await;
    if !db.is_postgres() {
        eprintln!(
            "skipped: an embedded database cannot go away under the app (set FOLIO_TEST_DATABASE_URL to run this)"
        );
        return;
    }
    let mut url = reqwest::Url::parse(db.url()).expect("a database URL");
    let target = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    );
    let proxy = DbProxy::start(target).await;
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(proxy.addr.port())).expect("port");
    let mut config = test_config(&db);
    config.database_url = url.to_string();
    config.db_acquire_timeout = Duration::from_secs(1);
    config.cache.mode = CacheMode::Off;
    let app = TestApp::spawn_with(db, config).await;
    let f = Fixture::create(&app.store).await;
    let alice = token_for(f.alice);
    let query = "{ posts(first: 1) { totalCount } }";
    assert_eq!(assert_admitted(&app, query).await["posts"]["totalCount"], 4);

    proxy.cut(outage).await;
    for i in 0..3 {
        let started = Instant::now();
        let a = post_query(&app, Some(GQL_RESPONSE), query).await;
        assert_eq!(
            a.code(),
            "SERVICE_UNAVAILABLE",
            "{outage:?}: query {i} with the database gone: {a:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let a = post_as(&app, Some(&alice), &[], "{ me { id } }", json!({})).await;
        assert_eq!(
            (a.status, a.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            "{outage:?}: a signed-in request with the database gone: {a:?}"
        );
    }
    assert_eq!(app.get("/readyz").await.status(), 503);
    assert_eq!(app.get("/healthz").await.status(), 200);

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = post_query(&app, Some(GQL_RESPONSE), query).await;
        if a.status == StatusCode::OK && a.body.get("errors").is_none() {
            assert_eq!(a.body["data"]["posts"]["totalCount"], 4);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within 10 s of the database coming back: {a:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(app.get("/readyz").await.status(), 200);
    let a = post_as(&app, Some(&alice), &[], "{ me { name } }", json!({})).await;
    assert_eq!(a.body["data"]["me"]["name"], "Alice Liddell", "{a:?}");
}

/// The database process is down: connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_refusing_connections_and_coming_back_needs_no_restart() {
    database_down_and_back(Outage::Refused).await;
}

/// Something in front of the database accepts connections and closes them at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_closing_connections_and_coming_back_needs_no_restart() {
    database_down_and_back(Outage::ClosedOnArrival).await;
}
