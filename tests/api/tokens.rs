//! Bearer tokens as a client sees them: which tokens sign a request in, and which end it with a 401.
//!
//! - Folio's own HS256 tokens: accepted when valid (or expired by less than the leeway); refused for every way a
//!   token can be wrong (expiry, `nbf`, signature, `iss`, `aud`, missing or mistyped claims, `alg: none`, the
//!   RS/HS key confusion, an unknown `kid`, a malformed header, a user that no longer exists).
//! - An external identity provider's RS256/ES256 tokens, verified against a JWKS that a tiny server inside the
//!   test serves (and counts requests to): provisioning on first sight, key rotation, the refresh rate limit,
//!   the cache lifetime, algorithm pinning, roles, and linking to an existing local account by email.
//!
//! Every refusal is checked the way a client meets it: the exact HTTP status, exactly one error with the
//! expected `extensions.code`, and no `data` (the operation never ran).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use folio::config::ExternalIdp;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::helpers::{Fixture, TEST_SECRET, TestApp, TestDb, first_code, test_config, token_for};

// ---------------------------------------------------------------------------------------------------------------
// Keys, claims and signing
// ---------------------------------------------------------------------------------------------------------------

/// Test-only keys (see `tests/fixtures/jwt/README.md`).
const RSA1: &[u8] = include_bytes!("../fixtures/jwt/rsa1.pem");
const RSA1_PUBLIC: &[u8] = include_bytes!("../fixtures/jwt/rsa1.pub.pem");
const RSA2: &[u8] = include_bytes!("../fixtures/jwt/rsa2.pem");
const EC1: &[u8] = include_bytes!("../fixtures/jwt/ec1.pem");

/// The issuer and audience the test identity provider is configured with.
const IDP_ISSUER: &str = "https://idp.test/";
const IDP_AUDIENCE: &str = "folio-web";

/// Who the request runs as, for own tokens.
const ME: &str = "{ me { id email } }";
/// Who the request runs as, for external tokens (which also provision the name and role).
const ME_FULL: &str = "{ me { id name email role } }";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The claims of a valid own token for `user_id`, shaped like those `login` issues. Tests then break one claim,
/// so a refusal can only be caused by that claim.
fn own_claims(user_id: i64) -> Value {
    let now = now();
    json!({
        "sub": user_id.to_string(),
        "role": "USER",
        "iat": now,
        "exp": now + 600,
        "iss": "folio",
        "aud": "folio",
    })
}

/// The claims of a valid token from the test identity provider.
fn idp_claims(sub: &str, email: &str) -> Value {
    let now = now();
    json!({
        "sub": sub,
        "email": email,
        "name": "Dana",
        "iat": now,
        "exp": now + 600,
        "iss": IDP_ISSUER,
        "aud": IDP_AUDIENCE,
    })
}

/// `claims` with `key` set to `value`.
fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// `claims` without `key`.
fn without(mut claims: Value, key: &str) -> Value {
    claims
        .as_object_mut()
        .expect("claims are an object")
        .remove(key);
    claims
}

/// A header for `alg` naming the key `kid`.
fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    header
}

/// A token over exactly these claims; `jsonwebtoken` adds nothing, so each test controls every claim.
fn sign(header: &Header, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign a test token")
}

/// An HS256 token signed with `secret` (Folio's own tokens when it is `TEST_SECRET`).
fn sign_hs256(secret: &[u8], claims: &Value) -> String {
    sign(
        &header(Algorithm::HS256, None),
        &EncodingKey::from_secret(secret),
        claims,
    )
}

/// An RS256 token signed with the RSA private key `key_pem`, naming `kid`.
fn sign_rs256(key_pem: &[u8], kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(key_pem).expect("RSA test key");
    sign(&header(Algorithm::RS256, Some(kid)), &key, claims)
}

/// An ES256 token signed with the P-256 private key `key_pem`, naming `kid`.
fn sign_es256(key_pem: &[u8], kid: &str, claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(key_pem).expect("EC test key");
    sign(&header(Algorithm::ES256, Some(kid)), &key, claims)
}

/// The public JWK of an RSA private key, as an identity provider publishes it.
fn rsa_jwk(key_pem: &[u8], kid: &str) -> Jwk {
    let key = EncodingKey::from_rsa_pem(key_pem).expect("RSA test key");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).expect("RSA JWK");
    jwk.common.key_id = Some(kid.into());
    jwk
}

/// The public JWK of a P-256 private key.
fn ec_jwk(key_pem: &[u8], kid: &str) -> Jwk {
    let key = EncodingKey::from_ec_pem(key_pem).expect("EC test key");
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).expect("EC JWK");
    jwk.common.key_id = Some(kid.into());
    jwk
}

// ---------------------------------------------------------------------------------------------------------------
// The identity provider's JWKS endpoint, and apps that trust it
// ---------------------------------------------------------------------------------------------------------------

/// What the JWKS handler serves and counts.
#[derive(Clone)]
struct JwksState {
    keys: Arc<Mutex<JwkSet>>,
    fetches: Arc<AtomicUsize>,
    max_age_secs: u64,
}

/// A JWKS endpoint on an ephemeral port: the keys it serves can be swapped (rotation), and it counts how often
/// Folio asked, which is how the cache and its rate limit are observed from outside.
struct JwksServer {
    addr: SocketAddr,
    state: JwksState,
    task: JoinHandle<()>,
}

impl JwksServer {
    /// Serves `keys` at `/jwks` with `Cache-Control: max-age=<max_age_secs>`.
    async fn start(keys: Vec<Jwk>, max_age_secs: u64) -> Self {
        async fn jwks(State(state): State<JwksState>) -> impl IntoResponse {
            state.fetches.fetch_add(1, Ordering::SeqCst);
            let set = state.keys.lock().expect("JWKS lock").clone();
            (
                [(
                    header::CACHE_CONTROL,
                    format!("public, max-age={}", state.max_age_secs),
                )],
                axum::Json(set),
            )
        }

        let state = JwksState {
            keys: Arc::new(Mutex::new(JwkSet { keys })),
            fetches: Arc::new(AtomicUsize::new(0)),
            max_age_secs,
        };
        let router = axum::Router::new()
            .route("/jwks", axum::routing::get(jwks))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the JWKS server");
        let addr = listener.local_addr().expect("JWKS server address");
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .await
                .expect("JWKS server runs");
        });
        Self { addr, state, task }
    }

    fn url(&self) -> String {
        format!("http://{}/jwks", self.addr)
    }

    /// How many times the JWKS has been fetched so far.
    fn fetches(&self) -> usize {
        self.state.fetches.load(Ordering::SeqCst)
    }

    /// Replaces the published keys, as a provider does when it rotates them.
    fn publish(&self, keys: Vec<Jwk>) {
        *self.state.keys.lock().expect("JWKS lock") = JwkSet { keys };
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Folio on its own database that also accepts the provider behind `jwks` (issuer `IDP_ISSUER`, audience
/// `IDP_AUDIENCE`, no role claim, no minimum refresh interval), after `configure` has adjusted that.
async fn spawn_with_idp(jwks: &JwksServer, configure: impl FnOnce(&mut ExternalIdp)) -> TestApp {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    let mut idp = ExternalIdp {
        jwks_url: jwks.url(),
        issuer: IDP_ISSUER.into(),
        audience: IDP_AUDIENCE.into(),
        role_claim: None,
        min_refresh: Duration::ZERO,
    };
    configure(&mut idp);
    config.auth.external = Some(idp);
    TestApp::spawn_with(db, config).await
}

// ---------------------------------------------------------------------------------------------------------------
// What the client sees
// ---------------------------------------------------------------------------------------------------------------

/// POSTs `query` with this exact `Authorization` header value (not necessarily a well-formed bearer header).
async fn post_with_authorization(
    app: &TestApp,
    authorization: &str,
    query: &str,
) -> reqwest::Response {
    app.client
        .post(format!("{}/graphql", app.base))
        .header(reqwest::header::AUTHORIZATION, authorization)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("request")
}

/// POSTs `query` as the bearer of `token`, whatever the status.
async fn post_as(app: &TestApp, token: &str, query: &str) -> reqwest::Response {
    app.post_graphql_as(Some(token), json!({ "query": query }))
        .await
}

/// Asserts a request-level refusal: exactly `status`, exactly one error with `code`, and no `data` at all (the
/// operation did not run). Returns the body.
async fn assert_refused(res: reqwest::Response, status: u16, code: &str, case: &str) -> Value {
    let actual = res.status().as_u16();
    let body: Value = res.json().await.expect("JSON body");
    assert_eq!(actual, status, "{case}: HTTP status; body {body}");
    assert_eq!(
        body["errors"].as_array().map(Vec::len),
        Some(1),
        "{case}: exactly one error; body {body}"
    );
    assert_eq!(first_code(&body), code, "{case}: error code; body {body}");
    assert!(
        body.get("data").is_none(),
        "{case}: nothing was executed, so there is no `data`; body {body}"
    );
    body
}

/// Asserts what a client with refused credentials sees: 401 with a `Bearer` challenge and one
/// `UNAUTHENTICATED` error, never an anonymous answer.
async fn assert_unauthenticated(res: reqwest::Response, case: &str) {
    let challenge = res
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_refused(res, 401, "UNAUTHENTICATED", case).await;
    assert!(
        challenge
            .as_deref()
            .is_some_and(|c| c.starts_with("Bearer")),
        "{case}: a 401 carries a Bearer WWW-Authenticate challenge, got {challenge:?}"
    );
}

/// Runs `query` as the bearer of `token`, asserting 200 and no errors; returns `data`.
async fn data_as(app: &TestApp, token: &str, query: &str, case: &str) -> Value {
    let body = app.gql_as(Some(token), query, json!({})).await;
    assert!(
        body.get("errors").is_none(),
        "{case}: no errors; body {body}"
    );
    body["data"].clone()
}

// ---------------------------------------------------------------------------------------------------------------
// Folio's own tokens
// ---------------------------------------------------------------------------------------------------------------

/// A token `login` would issue signs the request in as its user; no header at all is anonymous, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_token_signs_in_and_no_header_is_anonymous() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;

    let data = data_as(&app, &token_for(fx.alice), ME, "alice's token").await;
    assert_eq!(data["me"]["id"], json!(fx.alice.to_string()));
    assert_eq!(data["me"]["email"], json!("alice@example.com"));

    let body = app.gql_as(None, ME, json!({})).await;
    assert!(body.get("errors").is_none(), "anonymous: no errors; {body}");
    assert_eq!(body["data"]["me"], Value::Null, "anonymous: `me` is null");
}

/// Clocks drift: a token that expired less than the leeway (30 s) ago is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_token_expired_within_the_leeway_is_accepted() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let token = sign_hs256(
        TEST_SECRET.as_bytes(),
        &with(own_claims(fx.alice), "exp", json!(now() - 10)),
    );
    let data = data_as(&app, &token, ME, "exp 10 s ago").await;
    assert_eq!(data["me"]["id"], json!(fx.alice.to_string()));
}

/// Every way an own token can be wrong ends the request with 401; none of them degrades to anonymous.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_tokens_that_fail_a_check_get_401() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let secret = TEST_SECRET.as_bytes();
    let valid = || own_claims(fx.alice);

    // The control: the unbroken claims are accepted, so each refusal below is caused by its one change.
    let data = data_as(&app, &sign_hs256(secret, &valid()), ME, "control").await;
    assert_eq!(data["me"]["id"], json!(fx.alice.to_string()));

    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(valid().to_string()),
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "expired beyond the leeway",
            sign_hs256(secret, &with(valid(), "exp", json!(now() - 120))),
        ),
        (
            "nbf in the future",
            sign_hs256(secret, &with(valid(), "nbf", json!(now() + 300))),
        ),
        (
            "signed with another secret",
            sign_hs256(b"another-secret-that-is-also-32-bytes-long!", &valid()),
        ),
        (
            "wrong iss",
            sign_hs256(secret, &with(valid(), "iss", json!("someone-else"))),
        ),
        (
            "wrong aud",
            sign_hs256(secret, &with(valid(), "aud", json!("another-service"))),
        ),
        ("missing exp", sign_hs256(secret, &without(valid(), "exp"))),
        (
            "string-typed exp",
            sign_hs256(secret, &with(valid(), "exp", json!("9999999999"))),
        ),
        ("alg none", alg_none),
    ];
    for (case, token) in cases {
        assert_unauthenticated(post_as(&app, &token, ME).await, case).await;
    }
}

/// A header that is not `Bearer <jwt>` is refused outright, not ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_headers_get_401() {
    let app = TestApp::spawn().await;
    for value in [
        "Bearer",
        "Bearer a.b",
        "Basic dXNlcjpwdw==",
        "Bearer not-a-jwt",
    ] {
        let res = post_with_authorization(&app, value, ME).await;
        assert_unauthenticated(res, &format!("Authorization: {value}")).await;
    }
}

/// A correctly signed token whose user has gone (or never existed) is a dead session, not an anonymous one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_a_user_that_does_not_exist_gets_401() {
    let app = TestApp::spawn().await;
    Fixture::create(&app.store).await;
    let res = post_as(&app, &token_for(999_999), ME).await;
    assert_unauthenticated(res, "token for user 999999").await;
}

/// The classic RS/HS confusion: an HS256 token whose HMAC key is the provider's *public* RSA key (which anyone
/// can download) must not verify, whichever claims it carries and whatever `kid` it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_token_keyed_with_the_idp_public_key_gets_401() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let fx = Fixture::create(&app.store).await;

    // The control: the provider's genuine RS256 token is accepted.
    let genuine = sign_rs256(RSA1, "k1", &idp_claims("idp|123", "dana@example.com"));
    data_as(&app, &genuine, ME, "control").await;

    let forged_key = EncodingKey::from_secret(RSA1_PUBLIC);
    let hs_k1 = header(Algorithm::HS256, Some("k1"));
    for (case, claims) in [
        ("provider claims", idp_claims("idp|123", "dana@example.com")),
        ("own claims for alice", own_claims(fx.alice)),
    ] {
        let forged = sign(&hs_k1, &forged_key, &claims);
        assert_unauthenticated(
            post_as(&app, &forged, ME).await,
            &format!("HS256 keyed with rsa1.pub.pem, {case}"),
        )
        .await;
    }
}

/// A `kid` the provider does not publish (here: rsa2 presented as "nope") is refused after a refresh finds
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_gets_401() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let claims = idp_claims("idp|123", "dana@example.com");

    data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME, "control").await;
    let res = post_as(&app, &sign_rs256(RSA2, "nope", &claims), ME).await;
    assert_unauthenticated(res, "RS256 token with kid `nope`").await;
}

// ---------------------------------------------------------------------------------------------------------------
// The external identity provider
// ---------------------------------------------------------------------------------------------------------------

/// A provider's user is created on first sight from `sub`, `email` (normalised) and `name`, with the USER role,
/// and found again by `sub` afterwards. RS256 and ES256 keys both work, from a single cached JWKS fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_token_provisions_the_user_once() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1"), ec_jwk(EC1, "e1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let claims = idp_claims("idp|123", "Dana@Example.com");

    let first = data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME_FULL, "first").await;
    assert_eq!(first["me"]["name"], json!("Dana"));
    assert_eq!(first["me"]["email"], json!("dana@example.com"));
    assert_eq!(first["me"]["role"], json!("USER"));
    let id = first["me"]["id"].clone();
    assert!(id.is_string(), "an id: {first}");

    let second = data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME_FULL, "second").await;
    assert_eq!(second["me"]["id"], id, "the same `sub` is the same user");
    assert_eq!(
        app.store.count_users().await.expect("count users"),
        1,
        "no second account"
    );

    let es = sign_es256(EC1, "e1", &idp_claims("idp|456", "eve@example.com"));
    let data = data_as(&app, &es, ME_FULL, "ES256").await;
    assert_eq!(data["me"]["email"], json!("eve@example.com"));
    assert_ne!(data["me"]["id"], id, "another `sub` is another user");

    assert_eq!(jwks.fetches(), 1, "keys are cached within max-age");
}

/// When the provider rotates its keys, a token naming the new `kid` triggers a refresh and is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_keys_are_fetched_on_an_unknown_kid() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let claims = idp_claims("idp|123", "dana@example.com");

    let before = data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME, "k1").await;
    assert_eq!(jwks.fetches(), 1);

    jwks.publish(vec![rsa_jwk(RSA2, "k2")]);
    let after = data_as(
        &app,
        &sign_rs256(RSA2, "k2", &claims),
        ME,
        "k2 after rotation",
    )
    .await;
    assert_eq!(after["me"]["id"], before["me"]["id"], "same user");
    assert_eq!(jwks.fetches(), 2, "one refresh for the new kid");
}

/// A flood of made-up `kid`s (here 20 at once) costs the provider no extra request within `min_refresh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_kids_fetches_the_jwks_once() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let app = spawn_with_idp(&jwks, |idp| idp.min_refresh = Duration::from_secs(30)).await;
    let claims = idp_claims("idp|123", "dana@example.com");

    data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME, "good token").await;
    assert_eq!(jwks.fetches(), 1);

    let tokens: Vec<String> = (0..20)
        .map(|_| sign_rs256(RSA2, &uuid::Uuid::new_v4().to_string(), &claims))
        .collect();
    let responses =
        futures_util::future::join_all(tokens.iter().map(|t| post_as(&app, t, ME))).await;
    for (i, res) in responses.into_iter().enumerate() {
        assert_unauthenticated(res, &format!("random kid #{i}")).await;
    }
    assert_eq!(jwks.fetches(), 1, "no refresh within min_refresh");

    // The known key still works: the flood did not disturb the cache.
    data_as(
        &app,
        &sign_rs256(RSA1, "k1", &claims),
        ME,
        "good token again",
    )
    .await;
    assert_eq!(jwks.fetches(), 1);
}

/// Keys are not trusted beyond the `Cache-Control: max-age` they were served with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_fetched_again_after_max_age() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 1).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let claims = idp_claims("idp|123", "dana@example.com");

    data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME, "first").await;
    assert_eq!(jwks.fetches(), 1);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    data_as(&app, &sign_rs256(RSA1, "k1", &claims), ME, "after max-age").await;
    assert_eq!(jwks.fetches(), 2, "expired keys are fetched again");
}

/// Each published key verifies only its own algorithm, and provider tokens meet the same claim rules as own
/// ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_tokens_are_pinned_to_the_key_algorithm_and_checked() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1"), ec_jwk(EC1, "e1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let valid = || idp_claims("idp|123", "dana@example.com");

    data_as(&app, &sign_rs256(RSA1, "k1", &valid()), ME, "control").await;

    let cases: Vec<(&str, String)> = vec![
        (
            "ES256 header naming the RSA key k1",
            sign_es256(EC1, "k1", &valid()),
        ),
        (
            "RS256 header naming the EC key e1",
            sign_rs256(RSA1, "e1", &valid()),
        ),
        (
            "wrong iss",
            sign_rs256(
                RSA1,
                "k1",
                &with(valid(), "iss", json!("https://evil.test/")),
            ),
        ),
        (
            "wrong aud",
            sign_rs256(RSA1, "k1", &with(valid(), "aud", json!("another-client"))),
        ),
        (
            "expired beyond the leeway",
            sign_rs256(RSA1, "k1", &with(valid(), "exp", json!(now() - 120))),
        ),
    ];
    for (case, token) in cases {
        assert_unauthenticated(post_as(&app, &token, ME).await, case).await;
    }
}

/// A provider's token cannot make anyone an admin unless Folio was told which claim carries the role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_come_from_the_token_only_when_a_role_claim_is_configured() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let claims = with(
        with(
            idp_claims("idp|123", "dana@example.com"),
            "role",
            json!("ADMIN"),
        ),
        "folio_role",
        json!("ADMIN"),
    );
    let token = sign_rs256(RSA1, "k1", &claims);
    let users = "{ users { totalCount } }";

    let app = spawn_with_idp(&jwks, |_| {}).await;
    let data = data_as(&app, &token, ME_FULL, "no role claim").await;
    assert_eq!(data["me"]["role"], json!("USER"));
    let body = app.gql_as(Some(&token), users, json!({})).await;
    assert_eq!(first_code(&body), "FORBIDDEN", "admin-only field; {body}");

    let app = spawn_with_idp(&jwks, |idp| idp.role_claim = Some("folio_role".into())).await;
    let data = data_as(&app, &token, ME_FULL, "role claim folio_role").await;
    assert_eq!(data["me"]["role"], json!("ADMIN"));
    let data = data_as(&app, &token, users, "admin lists users").await;
    assert_eq!(data["users"]["totalCount"], json!(1));

    // The provider is then the source of truth: a later token without the claim is a demotion.
    let plain = sign_rs256(RSA1, "k1", &idp_claims("idp|123", "dana@example.com"));
    let data = data_as(&app, &plain, ME_FULL, "role claim absent").await;
    assert_eq!(data["me"]["role"], json!("USER"));
}

/// A provider identity never takes over an existing local account, verified email or not: signing in with it
/// answers `CONFLICT` (with what to do), the account and its password stay as they were, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_identity_never_takes_over_a_local_account() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let sign_up = "mutation($i: SignUpInput!) { signUp(input: $i) { user { id } } }";
    let login = "mutation($i: LoginInput!) { login(input: $i) { user { id } } }";
    let credentials = json!({ "email": "erin@example.com", "password": "erin's password" });
    let body = app
        .gql(
            sign_up,
            json!({ "i": { "email": "erin@example.com", "name": "Erin", "password": "erin's password" } }),
        )
        .await;
    let local = body["data"]["signUp"]["user"]["id"].clone();
    let claims = idp_claims("idp|erin", "Erin@Example.com");
    for (case, claims) in [
        (
            "email_verified false",
            with(claims.clone(), "email_verified", json!(false)),
        ),
        ("email_verified absent", claims.clone()),
        (
            "email_verified true",
            with(claims, "email_verified", json!(true)),
        ),
    ] {
        let res = post_as(&app, &sign_rs256(RSA1, "k1", &claims), ME).await;
        assert_refused(res, 409, "CONFLICT", case).await;
    }
    assert_eq!(app.store.count_users().await.expect("count users"), 1);
    let after = app.gql(login, json!({ "i": credentials })).await;
    assert_eq!(after["data"]["login"]["user"]["id"], local, "{after}");
}

/// Linking is an explicit step the account's owner takes, signed in: `linkIdentity` with the provider's token
/// (its email verified and the account's own). Then the provider's tokens sign in to that account, and the
/// password still works. Never for an admin account; never an identity linked elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linking_is_an_explicit_signed_in_step_never_for_admins() {
    let jwks = JwksServer::start(vec![rsa_jwk(RSA1, "k1")], 300).await;
    let app = spawn_with_idp(&jwks, |_| {}).await;
    let sign_up = "mutation($i: SignUpInput!) { signUp(input: $i) { token user { id } } }";
    let login = "mutation($i: LoginInput!) { login(input: $i) { user { id } } }";
    let link = "mutation($t: String!) { linkIdentity(token: $t) { id email } }";
    let account = |email: &str| json!({ "i": { "email": email, "name": "Fay", "password": "fay's password" } });
    let body = app.gql(sign_up, account("fay@example.com")).await;
    let local = body["data"]["signUp"]["user"]["id"].clone();
    let session = body["data"]["signUp"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let verified = |sub: &str, email: &str| {
        sign_rs256(
            RSA1,
            "k1",
            &with(idp_claims(sub, email), "email_verified", json!(true)),
        )
    };

    // Anonymous: the guard refuses. Another address, or an unverified one: refused.
    let res = app
        .gql(link, json!({ "t": verified("idp|fay", "fay@example.com") }))
        .await;
    assert_eq!(first_code(&res), "UNAUTHENTICATED", "{res}");
    let res = app
        .gql_as(
            Some(&session),
            link,
            json!({ "t": verified("idp|fay", "mallory@example.com") }),
        )
        .await;
    assert_eq!(first_code(&res), "FORBIDDEN", "{res}");
    let unverified = sign_rs256(RSA1, "k1", &idp_claims("idp|fay", "fay@example.com"));
    let res = app
        .gql_as(Some(&session), link, json!({ "t": unverified }))
        .await;
    assert_eq!(first_code(&res), "FORBIDDEN", "{res}");

    // The owner links it.
    let res = app
        .gql_as(
            Some(&session),
            link,
            json!({ "t": verified("idp|fay", "fay@example.com") }),
        )
        .await;
    assert_eq!(res["data"]["linkIdentity"]["id"], local, "{res}");
    let data = data_as(&app, &verified("idp|fay", "fay@example.com"), ME, "linked").await;
    assert_eq!(data["me"]["id"], local);
    let after = app
        .gql(
            login,
            json!({ "i": { "email": "fay@example.com", "password": "fay's password" } }),
        )
        .await;
    assert_eq!(
        after["data"]["login"]["user"]["id"], local,
        "the password still works: {after}"
    );

    // The same identity cannot join a second account.
    let body = app.gql(sign_up, account("fay2@example.com")).await;
    let other = body["data"]["signUp"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let res = app
        .gql_as(
            Some(&other),
            link,
            json!({ "t": verified("idp|fay", "fay2@example.com") }),
        )
        .await;
    assert_eq!(first_code(&res), "CONFLICT", "{res}");

    // An admin account is never linked.
    let body = app.gql(sign_up, account("root@example.com")).await;
    let root_id: i64 = body["data"]["signUp"]["user"]["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("id");
    let admin = crate::helpers::admin_token(&app.store, root_id).await;
    let res = app
        .gql_as(
            Some(&admin),
            link,
            json!({ "t": verified("idp|root", "root@example.com") }),
        )
        .await;
    assert_eq!(first_code(&res), "FORBIDDEN", "{res}");
    // Nor can its address be taken over by signing in with the provider.
    let res = post_as(&app, &verified("idp|root", "root@example.com"), ME).await;
    assert_refused(res, 409, "CONFLICT", "admin address").await;
}
