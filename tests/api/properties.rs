//! Property tests: whatever a client puts in variables (any Unicode text, control characters, empty,
//! whitespace-only, very long; huge, negative and fractional numbers; ids that are not numbers or overflow
//! `i64`; any header value; any signed or unsigned webhook body), every mutation and every argument of every
//! query answers through real HTTP with success or a client error, never a 5xx or `INTERNAL_SERVER_ERROR`. Text that is accepted reads back exactly as stored
//! (trimmed, the documented normalisation), on SQLite and on PostgreSQL alike; text that is refused is refused
//! with `BAD_USER_INPUT` and `fieldErrors` naming the field.
//!
//! Runs `PROPTEST_CASES` cases per property (default 48, so the suite stays quick); every failure found so far
//! has a regression test in `regressions` below.

use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp, admin_token, token_for};

/// Codes a client may legitimately get for a bad or unknown value.
const CLIENT_CODES: &[&str] = &[
    "BAD_USER_INPUT",
    "NOT_FOUND",
    "FORBIDDEN",
    "CONFLICT",
    "UNAUTHENTICATED",
    "RATE_LIMITED",
];

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// Any text a client could send.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\PC{0,120}",
        prop::collection::vec(prop::char::range('\u{0}', '\u{1f}'), 0..12)
            .prop_map(|v| v.into_iter().collect::<String>()),
        "[ \\t\\r\\n\u{a0}\u{2003}]{0,12}",
        (0usize..3).prop_map(|k| "é".repeat([199, 5_001, 60_000][k])),
        "[a-zA-Z0-9 ]{1,40}\u{0}[a-z]{0,5}",
        Just(String::new()),
    ]
}

/// Any value where an `ID` goes.
fn id() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(|n| json!(n.to_string())),
        any::<i64>().prop_map(|n| json!(n)),
        Just(json!("99999999999999999999999")),
        Just(json!("-1")),
        Just(json!("0")),
        Just(json!(1.5)),
        Just(json!(true)),
        text().prop_map(|s| json!(s)),
    ]
}

/// Any value where an `Int` goes.
fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-5i64..120).prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!(1e300)),
        Just(json!("12")),
    ]
}

/// One answer: the HTTP status and the body.
struct Answer {
    status: u16,
    body: Value,
}

impl Answer {
    fn codes(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|errors| {
                errors
                    .iter()
                    .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// No 5xx, no internal error; every error a client error.
    fn sane(&self, what: &str) -> Result<(), TestCaseError> {
        prop_assert!(
            self.status < 500,
            "{what}: HTTP {} {}",
            self.status,
            self.body
        );
        for code in self.codes() {
            prop_assert!(
                CLIENT_CODES.contains(&code.as_str()),
                "{what}: code {code} in {}",
                self.body
            );
        }
        Ok(())
    }

    /// Refused because of `field`'s value: `BAD_USER_INPUT`, with `fieldErrors.<field>` when the value
    /// reached validation (a value of the wrong type is refused before, without `fieldErrors`).
    fn refused_for(&self, field: &str, what: &str) -> Result<(), TestCaseError> {
        let codes = self.codes();
        prop_assert_eq!(
            codes.first().map(String::as_str),
            Some("BAD_USER_INPUT"),
            "{}: {}",
            what,
            self.body
        );
        let errors = &self.body["errors"][0]["extensions"]["fieldErrors"];
        prop_assert!(
            errors[field].is_array(),
            "{what}: fieldErrors.{field} in {}",
            self.body
        );
        Ok(())
    }
}

async fn call(app: &TestApp, token: Option<&str>, query: &str, variables: Value) -> Answer {
    let mut request = app
        .client
        .post(format!("{}/graphql", app.base))
        .header("accept", "application/graphql-response+json")
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("an answer");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, body }
}

/// A runtime and an app with the fixture, for one property or the fuzzer (their cases are synchronous).
pub(crate) fn setup() -> (tokio::runtime::Runtime, TestApp, Fixture) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (app, fx) = rt.block_on(async {
        let app = TestApp::spawn().await;
        let fx = Fixture::create(&app.store).await;
        (app, fx)
    });
    (rt, app, fx)
}

/// What the server stores for accepted text.
fn stored(sent: &str) -> &str {
    sent.trim()
}

#[test]
fn text_in_every_mutation_is_stored_exactly_or_refused_with_field_errors() {
    let (rt, app, fx) = setup();
    let alice = token_for(fx.alice);
    let post = fx.alice_posts[0].to_string();
    runner()
        .run(&(text(), text(), text(), text()), |(title, content, body, name)| {
            rt.block_on(async {
                // createPost: title and content.
                let a = call(
                    &app,
                    Some(&alice),
                    "mutation($t: String!, $c: String!) { createPost(input: {title: $t, content: $c, published: true}) { id } }",
                    json!({ "t": title, "c": content }),
                )
                .await;
                a.sane("createPost")?;
                match a.body["data"]["createPost"]["id"].as_str() {
                    Some(id) => {
                        let read = call(&app, None, "query($id: ID!) { post(id: $id) { title content } }", json!({ "id": id })).await;
                        prop_assert_eq!(read.body["data"]["post"]["title"].as_str(), Some(stored(&title)));
                        prop_assert_eq!(read.body["data"]["post"]["content"].as_str(), Some(stored(&content)));
                    }
                    None => {
                        let field = if a.body["errors"][0]["extensions"]["fieldErrors"]["title"].is_array() { "title" } else { "content" };
                        a.refused_for(field, "createPost")?;
                    }
                }
                // addComment: body, read back through the federation entity.
                let a = call(
                    &app,
                    Some(&alice),
                    "mutation($p: ID!, $b: String!) { addComment(input: {postId: $p, body: $b}) { id } }",
                    json!({ "p": post, "b": body }),
                )
                .await;
                a.sane("addComment")?;
                match a.body["data"]["addComment"]["id"].as_str() {
                    Some(id) => {
                        let read = call(
                            &app,
                            None,
                            "query($r: [_Any!]!) { _entities(representations: $r) { ... on Comment { body } } }",
                            json!({ "r": [{ "__typename": "Comment", "id": id }] }),
                        )
                        .await;
                        prop_assert_eq!(read.body["data"]["_entities"][0]["body"].as_str(), Some(stored(&body)));
                    }
                    None => a.refused_for("body", "addComment")?,
                }
                // updateProfile: name.
                let a = call(&app, Some(&alice), "mutation($n: String!) { updateProfile(input: {name: $n}) { name } }", json!({ "n": name })).await;
                a.sane("updateProfile")?;
                match a.body["data"]["updateProfile"]["name"].as_str() {
                    Some(_) => {
                        let read = call(&app, Some(&alice), "{ me { name } }", json!({})).await;
                        prop_assert_eq!(read.body["data"]["me"]["name"].as_str(), Some(stored(&name)));
                    }
                    None => a.refused_for("name", "updateProfile")?,
                }
                // updatePost with the same values.
                let a = call(
                    &app,
                    Some(&alice),
                    "mutation($id: ID!, $t: String, $c: String) { updatePost(id: $id, input: {title: $t, content: $c}) { title content } }",
                    json!({ "id": post, "t": title, "c": content }),
                )
                .await;
                a.sane("updatePost")?;
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn text_in_accounts_and_search_never_breaks() {
    let (rt, app, _fx) = setup();
    runner()
        .run(&(text(), text(), text()), |(email, name, password)| {
            rt.block_on(async {
                let a = call(
                    &app,
                    None,
                    "mutation($e: String!, $n: String!, $p: String!) { signUp(input: {email: $e, name: $n, password: $p}) { user { name } } }",
                    json!({ "e": email, "n": name, "p": password }),
                )
                .await;
                a.sane("signUp")?;
                if a.body["data"]["signUp"].is_object() {
                    prop_assert_eq!(a.body["data"]["signUp"]["user"]["name"].as_str(), Some(stored(&name)));
                    // The password is kept exactly as sent (never trimmed).
                    let login = call(
                        &app,
                        None,
                        "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { user { name } } }",
                        json!({ "e": email, "p": password }),
                    )
                    .await;
                    prop_assert!(login.body["data"]["login"].is_object(), "login after signUp: {}", login.body);
                }
                for (what, query) in [
                    ("login", "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }"),
                ] {
                    call(&app, None, query, json!({ "e": email, "p": password })).await.sane(what)?;
                }
                for (what, query, vars) in [
                    ("search", "query($s: String) { posts(filter: {search: $s}) { totalCount } }", json!({ "s": name })),
                    ("purgeCache", "mutation($t: [String!]!) { purgeCache(tags: $t) }", json!({ "t": [name] })),
                    ("linkIdentity", "mutation($t: String!) { linkIdentity(token: $t) { id } }", json!({ "t": password })),
                    ("after", "query($a: String) { posts(after: $a) { totalCount } }", json!({ "a": email })),
                ] {
                    call(&app, None, query, vars).await.sane(what)?;
                }
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn every_id_and_number_argument_answers_with_a_client_error_at_worst() {
    let (rt, app, fx) = setup();
    let alice = token_for(fx.alice);
    let admin = rt.block_on(admin_token(&app.store, fx.carol));
    runner()
        .run(&(id(), int(), text()), |(id, n, cursor)| {
            rt.block_on(async {
                let as_alice = Some(alice.as_str());
                let as_admin = Some(admin.as_str());
                let checks: [(&str, Option<&str>, &str, Value); 14] = [
                    ("post", None, "query($id: ID!) { post(id: $id) { id } }", json!({ "id": id })),
                    ("user", None, "query($id: ID!) { user(id: $id) { id } }", json!({ "id": id })),
                    ("posts", None, "query($n: Int!, $a: String, $u: ID) { posts(first: $n, after: $a, filter: {authorId: $u}) { totalCount } }", json!({ "n": n, "a": cursor, "u": id })),
                    ("users", as_admin, "query($n: Int!, $a: String) { users(first: $n, after: $a) { totalCount } }", json!({ "n": n, "a": cursor })),
                    ("comments", None, "query($n: Int!, $a: String) { posts(first: 1) { nodes { comments(first: $n, after: $a) { totalCount } } } }", json!({ "n": n, "a": cursor })),
                    ("userPosts", None, "query($id: ID!, $n: Int!) { user(id: $id) { posts(first: $n) { totalCount } } }", json!({ "id": id, "n": n })),
                    ("updatePost", as_alice, "mutation($id: ID!) { updatePost(id: $id, input: {title: \"Property title\"}) { id } }", json!({ "id": id })),
                    ("publishPost", as_alice, "mutation($id: ID!) { publishPost(id: $id) { id } }", json!({ "id": id })),
                    ("unpublishPost", as_alice, "mutation($id: ID!) { unpublishPost(id: $id) { id } }", json!({ "id": id })),
                    ("deletePost", as_alice, "mutation($id: ID!) { deletePost(id: $id) }", json!({ "id": id })),
                    ("addComment", as_alice, "mutation($id: ID!) { addComment(input: {postId: $id, body: \"Hello\"}) { id } }", json!({ "id": id })),
                    ("deleteComment", as_alice, "mutation($id: ID!) { deleteComment(id: $id) }", json!({ "id": id })),
                    ("setUserRole", as_admin, "mutation($id: ID!) { setUserRole(userId: $id, role: USER) { id } }", json!({ "id": id })),
                    ("entities", None, "query($r: [_Any!]!) { _entities(representations: $r) { ... on Post { id } } }", json!({ "r": [{ "__typename": "Post", "id": id }] })),
                ];
                for (what, token, query, vars) in checks {
                    call(&app, token, query, vars).await.sane(what)?;
                }
                Ok(())
            })
        })
        .unwrap();
}

/// Any byte string a header value may hold (no CR, LF or NUL, which HTTP itself forbids).
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[\\x20-\\x7e\t]{0,200}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..120).prop_map(|v| v
            .into_iter()
            .filter(|b| !matches!(b, b'\r' | b'\n' | 0))
            .collect()),
        Just(b"Bearer ".to_vec()),
        Just(b"text/event-stream".to_vec()),
        Just(b"application/json; charset=latin1".to_vec()),
    ]
}

/// Headers and webhook bodies: whatever values `Authorization`, `Accept`, `Content-Type`, `X-Forwarded-For`,
/// `X-Folio-Gateway-Secret` and `Stripe-Signature` carry, and whatever a correctly signed webhook body holds,
/// the answer is never a 5xx.
#[test]
fn any_header_and_any_signed_webhook_body_answers_below_500() {
    use crate::webhooks::{SECRET, now, signature, spawn_with_secrets};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = rt.block_on(spawn_with_secrets(&[SECRET]));
    let names = [
        "authorization",
        "accept",
        "content-type",
        "x-forwarded-for",
        "x-folio-gateway-secret",
        "stripe-signature",
    ];
    let strategy = (
        prop::collection::vec((0..names.len(), header_value()), 0..6),
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..300),
            "\\PC{0,200}".prop_map(String::into_bytes),
            (text(), text(), any::<i64>()).prop_map(|(kind, customer, created)| {
                json!({ "id": format!("evt_{created}"), "type": kind, "created": created,
                        "data": { "object": { "customer": customer, "client_reference_id": kind, "status": customer } } })
                    .to_string()
                    .into_bytes()
            }),
        ],
    );
    runner()
        .run(&strategy, |(headers, body)| {
            rt.block_on(async {
                let build = |method: reqwest::Method, path: &str| {
                    let mut request = app.client.request(method, format!("{}{path}", app.base));
                    for (name, value) in &headers {
                        if let Ok(value) = reqwest::header::HeaderValue::from_bytes(value) {
                            request = request.header(names[*name], value);
                        }
                    }
                    request
                };
                let graphql = build(reqwest::Method::POST, "/graphql")
                    .body(r#"{"query":"{ posts(first: 1) { totalCount } }"}"#)
                    .send()
                    .await
                    .expect("an answer");
                prop_assert!(
                    graphql.status().as_u16() < 500,
                    "POST /graphql: {}",
                    graphql.status()
                );
                let get = build(
                    reqwest::Method::GET,
                    "/graphql?query=%7B%20me%20%7B%20id%20%7D%20%7D",
                )
                .send()
                .await
                .expect("an answer");
                prop_assert!(
                    get.status().as_u16() < 500,
                    "GET /graphql: {}",
                    get.status()
                );
                let text = String::from_utf8_lossy(&body).into_owned();
                let signed = app
                    .client
                    .post(format!("{}/api/webhooks/stripe", app.base))
                    .header("stripe-signature", signature(SECRET, now(), &text))
                    .body(text.clone())
                    .send()
                    .await
                    .expect("an answer");
                prop_assert!(
                    signed.status().as_u16() < 500,
                    "signed webhook {text:?}: {}",
                    signed.status()
                );
                let unsigned = build(reqwest::Method::POST, "/api/webhooks/stripe")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("an answer");
                prop_assert!(
                    unsigned.status().as_u16() < 500,
                    "webhook: {}",
                    unsigned.status()
                );
                Ok(())
            })
        })
        .unwrap();
}

/// Inputs the properties found breaking something, kept as plain tests.
mod regressions {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_nul_character_is_refused_everywhere_not_an_internal_error() {
        let app = TestApp::spawn().await;
        let fx = Fixture::create(&app.store).await;
        let alice = token_for(fx.alice);
        let a = call(
            &app,
            Some(&alice),
            "mutation($t: String!) { createPost(input: {title: $t, content: \"Long enough content.\"}) { id } }",
            json!({ "t": "Title with a \u{0} inside" }),
        )
        .await;
        a.refused_for("title", "createPost").unwrap();
        let a = call(
            &app,
            None,
            "query($s: String) { posts(filter: {search: $s}) { totalCount } }",
            json!({ "s": "a\u{0}b" }),
        )
        .await;
        assert_eq!(a.codes(), ["BAD_USER_INPUT"], "{}", a.body);
        let a = call(
            &app,
            None,
            "mutation($e: String!, $p: String!) { login(input: {email: $e, password: $p}) { token } }",
            json!({ "e": "a\u{0}@example.com", "p": "whatever password" }),
        )
        .await;
        a.sane("login").unwrap();
    }
}
