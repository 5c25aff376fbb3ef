//! The response cache as a client sees it: `X-Cache`, `Cache-Control`, `ETag`, `Age` and `304`; lifetimes; the
//! privacy invariant (an answer that depends on who asks is never served to anyone else); one test per mutation
//! that it purges what it changed; the explicit purge over GraphQL and HTTP; single-flight; freshness while
//! writers and readers race; two instances on one Redis; Redis outages.
//!
//! Every test runs on the backend `test_config` picks: in-process by default, Redis under a prefix of the test's
//! own when `FOLIO_TEST_REDIS_URL` is set. The few that need Redis itself (two instances, a cut connection) return
//! early without it and say why. Assertions are on what a client receives (status, headers, body) plus
//! `/metrics`, never on internals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use folio::cache::CacheMode;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::helpers::{
    Fixture, RedisTarget, TestApp, TestDb, admin_token, bulk, first_code, new_admin, test_config,
    token_for, two_instances, uses_redis,
};

// ---------------------------------------------------------------------------------------------------------------
// Requests and what the client sees
// ---------------------------------------------------------------------------------------------------------------

/// One GraphQL answer as the client receives it.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    /// The body bytes (empty on a 304).
    raw: Vec<u8>,
    /// The body as JSON; `Null` when empty.
    body: Value,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Cache`: `HIT`, `MISS` or `BYPASS`.
    fn x_cache(&self) -> &str {
        self.header("x-cache").unwrap_or("<none>")
    }

    fn cache_control(&self) -> &str {
        self.header("cache-control").unwrap_or("<none>")
    }

    fn etag(&self) -> Option<&str> {
        self.header("etag")
    }

    /// Asserts a 200 without errors and returns `data`.
    fn ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        assert!(self.body.get("errors").is_none(), "{}", self.body);
        &self.body["data"]
    }
}

/// POSTs a GraphQL operation, with an optional bearer token and `If-None-Match`.
async fn send(
    app: &TestApp,
    token: Option<&str>,
    query: &str,
    variables: Value,
    if_none_match: Option<&str>,
) -> Reply {
    let mut req = app
        .client
        .post(format!("{}/graphql", app.base))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(etag) = if_none_match {
        req = req.header(header::IF_NONE_MATCH, etag);
    }
    reply(req.send().await.expect("request")).await
}

async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status();
    let headers = res.headers().clone();
    let raw = res.bytes().await.expect("body").to_vec();
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&raw).expect("JSON body")
    };
    Reply {
        status,
        headers,
        raw,
        body,
    }
}

async fn query(app: &TestApp, token: Option<&str>, q: &str, variables: Value) -> Reply {
    send(app, token, q, variables, None).await
}

/// Reads `q` until it is cached: a repeat must be a `HIT` with the same bytes. Returns `data`.
async fn cached(app: &TestApp, token: Option<&str>, q: &str, variables: Value) -> Value {
    let first = query(app, token, q, variables.clone()).await;
    first.ok();
    let second = query(app, token, q, variables).await;
    assert_eq!(
        second.x_cache(),
        "HIT",
        "a repeated read is served from the cache: {q}"
    );
    assert_eq!(second.raw, first.raw, "a hit answers the stored bytes: {q}");
    second.ok().clone()
}

/// The first read after a mutation that changed what `q` shows: computed anew (`MISS`). Returns `data`.
async fn fresh(app: &TestApp, token: Option<&str>, q: &str, variables: Value) -> Value {
    let r = query(app, token, q, variables).await;
    assert_eq!(
        r.x_cache(),
        "MISS",
        "the mutation purged what {q} had cached; got {}",
        r.body
    );
    r.ok().clone()
}

/// Runs a mutation that must succeed. Mutations always bypass the cache and are never stored. Returns `data`.
async fn mutate(app: &TestApp, token: Option<&str>, m: &str, variables: Value) -> Value {
    let r = query(app, token, m, variables).await;
    let data = r.ok().clone();
    assert_eq!(r.x_cache(), "BYPASS", "a mutation bypasses the cache: {m}");
    assert_eq!(
        r.cache_control(),
        "no-store",
        "a mutation is never cacheable"
    );
    assert!(r.etag().is_none(), "only cacheable responses carry an ETag");
    data
}

/// `(hits, misses, bypass)` from `/metrics`.
async fn counters(app: &TestApp) -> (f64, f64, f64) {
    (
        app.metric("folio_cache_hits_total").await,
        app.metric("folio_cache_misses_total").await,
        app.metric("folio_cache_bypass_total").await,
    )
}

/// The ids of a connection's nodes (`data[field].nodes[*].id`), as numbers.
fn node_ids(connection: &Value) -> Vec<i64> {
    connection["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["id"].as_str().expect("id").parse().expect("numeric id"))
        .collect()
}

fn id(n: i64) -> String {
    n.to_string()
}

const UPDATE_POST: &str =
    "mutation($id: ID!, $i: UpdatePostInput!) { updatePost(id: $id, input: $i) { id title } }";
const POST_TITLE: &str = "query($id: ID!) { post(id: $id) { id title } }";
const FEED: &str = "{ posts(first: 20) { nodes { id title } } }";

// ---------------------------------------------------------------------------------------------------------------
// Hits, misses, bypasses and their headers
// ---------------------------------------------------------------------------------------------------------------

/// A query is computed once (`MISS`, `public, max-age=60`, an ETag) and then answered from the cache (`HIT`, the
/// same bytes, `Age`, no SQL at all), whatever insignificant whitespace and commas the document carries and over
/// GET as over POST. Variables are part of the key. A response with an error is never stored, and a mutation
/// bypasses the cache with `no-store`. The counters in `/metrics` follow each of these.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_query_is_a_hit_with_the_same_bytes_and_no_sql() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let (hits, misses, bypass) = counters(&app).await;
    let feed = "{ posts(first: 10) { nodes { id title author { name } } } }";

    let first = query(&app, None, feed, json!({})).await;
    assert_eq!(
        first.ok()["posts"]["nodes"].as_array().map(Vec::len),
        Some(4)
    );
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.cache_control(), "public, max-age=60");
    let etag = first
        .etag()
        .expect("a cacheable response has an ETag")
        .to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert!(first.header("age").is_none(), "only hits carry Age");

    // The same document with other whitespace and commas is the same entry: a hit, no statement run.
    let reformatted = "{\n  posts(first: 10) {\n    nodes { id, title, author { name } }\n  }\n}\n";
    let before = app.metric("folio_db_statements_total").await;
    let second = query(&app, None, reformatted, json!({})).await;
    let statements = app.metric("folio_db_statements_total").await - before;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.raw, first.raw, "a hit answers the stored bytes");
    assert_eq!(second.cache_control(), "public, max-age=60");
    assert_eq!(second.etag(), Some(etag.as_str()));
    let age: u64 = second
        .header("age")
        .expect("a hit carries Age")
        .parse()
        .expect("Age is a number of seconds");
    assert!(age <= 5, "the entry was computed just now: Age {age}");
    assert_eq!(statements, 0.0, "a hit runs no SQL");

    // GET shares the entry.
    let get = app
        .client
        .get(format!("{}/graphql", app.base))
        .query(&[("query", feed)])
        .send()
        .await
        .expect("GET");
    let get = reply(get).await;
    assert_eq!(get.x_cache(), "HIT", "GET and POST share entries");
    assert_eq!(get.raw, first.raw);

    // Variables are part of the key.
    let a = query(
        &app,
        None,
        POST_TITLE,
        json!({ "id": id(f.alice_posts[0]) }),
    )
    .await;
    let b = query(&app, None, POST_TITLE, json!({ "id": id(f.bob_posts[0]) })).await;
    assert_eq!(
        (a.x_cache(), b.x_cache()),
        ("MISS", "MISS"),
        "other variables, other entry"
    );
    assert_eq!(a.ok()["post"]["title"], "Ownership in Rust");
    assert_eq!(b.ok()["post"]["title"], "Winter gardening");
    let a_again = query(
        &app,
        None,
        POST_TITLE,
        json!({ "id": id(f.alice_posts[0]) }),
    )
    .await;
    assert_eq!(a_again.x_cache(), "HIT");
    assert_eq!(a_again.raw, a.raw);

    // A response with an error is not stored: the repeat is computed again.
    let broken = "{ post(id: \"abc\") { title } }";
    for attempt in 0..2 {
        let r = query(&app, None, broken, json!({})).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(r.body["errors"].is_array(), "{}", r.body);
        assert_eq!(
            r.x_cache(),
            "MISS",
            "attempt {attempt}: errors are never cached"
        );
        assert_eq!(r.cache_control(), "no-store");
        assert!(r.etag().is_none());
    }

    let (h, m, b) = counters(&app).await;
    assert_eq!(h - hits, 3.0, "hits: reformatted, GET, repeated variables");
    assert_eq!(
        m - misses,
        5.0,
        "misses: the feed, two posts, two erroring reads"
    );
    assert_eq!(b - bypass, 0.0, "no bypass yet");

    // A mutation bypasses the cache: `no-store`, no ETag; it counts as a bypass and as nothing else.
    let token = token_for(f.alice);
    let data = mutate(
        &app,
        Some(&token),
        UPDATE_POST,
        json!({ "id": id(f.alice_posts[0]), "i": { "title": "Ownership, revisited" } }),
    )
    .await;
    assert_eq!(data["updatePost"]["title"], "Ownership, revisited");
    let (h2, m2, b2) = counters(&app).await;
    assert_eq!(b2 - b, 1.0, "the mutation is one bypass");
    assert_eq!(h2 - h, 0.0, "a mutation is never a hit");
    assert_eq!(
        m2 - m,
        0.0,
        "a mutation is a bypass, not also a cache miss (folio_cache_misses_total moved)"
    );
}

/// `If-None-Match` with the current ETag answers `304` with no body and the ETag echoed; a stale or foreign ETag
/// gets the full answer; once a mutation changed the data, the old ETag no longer matches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn if_none_match_with_the_current_etag_is_304() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let first = query(&app, None, FEED, json!({})).await;
    first.ok();
    let etag = first.etag().expect("ETag").to_owned();

    let not_modified = send(&app, None, FEED, json!({}), Some(&etag)).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.raw.is_empty(), "a 304 has no body");
    assert_eq!(
        not_modified.etag(),
        Some(etag.as_str()),
        "the ETag is echoed"
    );
    assert_eq!(not_modified.cache_control(), "public, max-age=60");

    // One of several candidates, or the weak form of it, matches too.
    let list = format!("\"nope\", W/{etag}");
    let r = send(&app, None, FEED, json!({}), Some(&list)).await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED, "If-None-Match: {list}");

    let stale = send(&app, None, FEED, json!({}), Some("\"0123456789abcdef\"")).await;
    assert_eq!(stale.status, StatusCode::OK);
    assert_eq!(stale.raw, first.raw, "a stale ETag gets the full answer");
    assert_eq!(stale.etag(), Some(etag.as_str()));

    // The data changes: the old ETag is stale now, and the answer carries a new one.
    mutate(
        &app,
        Some(&token_for(f.alice)),
        UPDATE_POST,
        json!({ "id": id(f.alice_posts[0]), "i": { "title": "A brand new title" } }),
    )
    .await;
    let changed = send(&app, None, FEED, json!({}), Some(&etag)).await;
    assert_eq!(
        changed.status,
        StatusCode::OK,
        "the old ETag no longer matches"
    );
    let titles = changed.ok()["posts"]["nodes"].to_string();
    assert!(titles.contains("A brand new title"), "{titles}");
    let new_etag = changed.etag().expect("ETag");
    assert_ne!(new_etag, etag);
}

/// `FOLIO_CACHE_TTL_SECS` bounds every lifetime: with 1 s, `Cache-Control` says `max-age=1`, the entry is a hit
/// at once and gone after 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_live_as_long_as_the_configured_lifetime() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.cache.ttl = Duration::from_secs(1);
    let app = TestApp::spawn_with(db, config).await;
    let f = Fixture::create(&app.store).await;
    let token = token_for(f.alice);
    let me = "{ me { id email } }";

    let first = query(&app, None, FEED, json!({})).await;
    first.ok();
    assert_eq!(first.cache_control(), "public, max-age=1");
    let mine = query(&app, Some(&token), me, json!({})).await;
    mine.ok();
    assert_eq!(mine.cache_control(), "private, max-age=1");
    let second = query(&app, None, FEED, json!({})).await;
    assert_eq!(second.x_cache(), "HIT", "served at once");
    assert_eq!(second.cache_control(), "public, max-age=1");
    let mine_again = query(&app, Some(&token), me, json!({})).await;
    assert_eq!(mine_again.x_cache(), "HIT");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let later = query(&app, None, FEED, json!({})).await;
    assert_eq!(later.x_cache(), "MISS", "expired after its max-age");
    assert_eq!(later.raw, first.raw);
    let mine_later = query(&app, Some(&token), me, json!({})).await;
    assert_eq!(mine_later.x_cache(), "MISS", "private entries expire too");
}

// ---------------------------------------------------------------------------------------------------------------
// Privacy: scopes
// ---------------------------------------------------------------------------------------------------------------

/// The privacy invariant. Alice's answers that depend on her (her own email and plan, `me`, her drafts) are
/// cached for her alone: Bob, an anonymous caller and an admin sending the exact same text each get their own
/// correct answer, computed for them, never Alice's. Alice gets hers back from the cache, marked `private`.
/// A public answer cached by one caller is shared with everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_depends_on_the_caller_is_never_served_to_anyone_else() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let (alice, bob) = (token_for(f.alice), token_for(f.bob));
    let alice_id = id(f.alice);

    // Private fields of Alice.
    let private = format!("{{ user(id: \"{alice_id}\") {{ id email plan }} }}");
    let a = query(&app, Some(&alice), &private, json!({})).await;
    assert_eq!(
        a.ok()["user"],
        json!({ "id": alice_id, "email": "alice@example.com", "plan": "FREE" })
    );
    assert_eq!(a.x_cache(), "MISS");
    assert_eq!(a.cache_control(), "private, max-age=60");
    for (who, token, email, plan) in [
        ("Bob", Some(bob.as_str()), Value::Null, Value::Null),
        ("anonymous", None, Value::Null, Value::Null),
        (
            "an admin",
            Some(admin.as_str()),
            json!("alice@example.com"),
            json!("FREE"),
        ),
    ] {
        let r = query(&app, token, &private, json!({})).await;
        assert_eq!(
            r.ok()["user"],
            json!({ "id": alice_id, "email": email, "plan": plan }),
            "{who} gets their own answer"
        );
        assert_ne!(r.x_cache(), "HIT", "{who} must not get Alice's entry");
    }
    let a_again = query(&app, Some(&alice), &private, json!({})).await;
    assert_eq!(
        a_again.x_cache(),
        "HIT",
        "Alice's own answer is cached for her"
    );
    assert_eq!(a_again.raw, a.raw);
    assert_eq!(a_again.cache_control(), "private, max-age=60");
    // Bob's (and anonymous) answers were cached in their own scopes, and are still their own.
    let b_again = query(&app, Some(&bob), &private, json!({})).await;
    assert_eq!(b_again.ok()["user"]["email"], Value::Null);
    let anon_again = query(&app, None, &private, json!({})).await;
    assert_eq!(anon_again.ok()["user"]["email"], Value::Null);
    assert_eq!(anon_again.cache_control(), "private, max-age=60");

    // `me`.
    let me = "{ me { id email } }";
    let a = query(&app, Some(&alice), me, json!({})).await;
    assert_eq!(
        a.ok()["me"],
        json!({ "id": alice_id, "email": "alice@example.com" })
    );
    assert_eq!(a.cache_control(), "private, max-age=60");
    let b = query(&app, Some(&bob), me, json!({})).await;
    assert_eq!(
        b.ok()["me"],
        json!({ "id": id(f.bob), "email": "bob@example.com" })
    );
    let anon = query(&app, None, me, json!({})).await;
    assert_eq!(anon.ok()["me"], Value::Null);
    let adm = query(&app, Some(&admin), me, json!({})).await;
    assert_ne!(adm.ok()["me"]["id"], json!(alice_id), "never Alice's `me`");
    assert!(
        adm.ok()["me"]["email"]
            .as_str()
            .is_some_and(|e| e.starts_with("admin-"))
    );
    let a_again = query(&app, Some(&alice), me, json!({})).await;
    assert_eq!(a_again.x_cache(), "HIT");
    assert_eq!(a_again.raw, a.raw);
    let anon_again = query(&app, None, me, json!({})).await;
    assert_eq!(anon_again.ok()["me"], Value::Null);

    // Drafts, through the feed filter, `post(id)` and `User.posts`.
    let drafts = format!(
        "{{ posts(filter: {{ authorId: \"{alice_id}\", drafts: true }}) {{ nodes {{ id }} }} }}"
    );
    let draft_post = format!("{{ post(id: \"{}\") {{ id title }} }}", f.alice_draft);
    let author_posts = format!("{{ user(id: \"{alice_id}\") {{ posts {{ nodes {{ id }} }} }} }}");
    let mine = cached(&app, Some(&alice), &drafts, json!({})).await;
    assert!(node_ids(&mine["posts"]).contains(&f.alice_draft), "{mine}");
    let mine = cached(&app, Some(&alice), &draft_post, json!({})).await;
    assert_eq!(mine["post"]["title"], "Secret draft");
    let mine = cached(&app, Some(&alice), &author_posts, json!({})).await;
    assert!(node_ids(&mine["user"]["posts"]).contains(&f.alice_draft));
    for (who, token) in [("Bob", Some(bob.as_str())), ("anonymous", None)] {
        // Twice: the second read may come from the cache, and must still be the caller's own answer.
        for _ in 0..2 {
            let r = query(&app, token, &drafts, json!({})).await;
            let ids = node_ids(&r.ok()["posts"]);
            assert!(
                !ids.contains(&f.alice_draft),
                "{who} sees no draft: {ids:?}"
            );
            assert_eq!(ids.len(), 2, "{who} sees Alice's published posts");
            let r = query(&app, token, &draft_post, json!({})).await;
            assert_eq!(r.ok()["post"], Value::Null, "{who}: a draft is missing");
            let r = query(&app, token, &author_posts, json!({})).await;
            let ids = node_ids(&r.ok()["user"]["posts"]);
            assert!(!ids.contains(&f.alice_draft), "{who}: {ids:?}");
        }
    }

    // A public answer cached for Alice is shared with anonymous callers and Bob.
    let public = "{ posts(first: 3) { nodes { id title } } }";
    let a = query(&app, Some(&alice), public, json!({})).await;
    assert_eq!(a.x_cache(), "MISS");
    assert_eq!(a.cache_control(), "public, max-age=60");
    for (who, token) in [("anonymous", None), ("Bob", Some(bob.as_str()))] {
        let r = query(&app, token, public, json!({})).await;
        assert_eq!(r.x_cache(), "HIT", "{who} shares the public entry");
        assert_eq!(r.raw, a.raw);
    }
}

/// A role change purges what was cached *for* that user, not only what was cached *about* them: an admin who is
/// demoted must stop getting the private data their admin role let them read, even from the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demoted_admin_is_no_longer_served_what_their_role_let_them_read() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let boss = new_admin(&app.store).await;
    let carol = admin_token(&app.store, f.carol).await;
    let alice_email = format!("{{ user(id: \"{}\") {{ email }} }}", f.alice);
    let users = "{ users(first: 1) { totalCount nodes { email } } }";

    let seen = cached(&app, Some(&carol), &alice_email, json!({})).await;
    assert_eq!(seen["user"]["email"], "alice@example.com");
    let seen = cached(&app, Some(&carol), users, json!({})).await;
    assert_eq!(seen["users"]["nodes"][0]["email"], "alice@example.com");

    mutate(
        &app,
        Some(&boss),
        "mutation($u: ID!) { setUserRole(userId: $u, role: USER) { role } }",
        json!({ "u": id(f.carol) }),
    )
    .await;

    let r = query(&app, Some(&carol), &alice_email, json!({})).await;
    assert_eq!(
        r.body["data"]["user"]["email"],
        Value::Null,
        "Carol is no longer an admin: Alice's email is hidden from her (X-Cache: {})",
        r.x_cache()
    );
    let r = query(&app, Some(&carol), users, json!({})).await;
    assert_eq!(
        first_code(&r.body),
        "FORBIDDEN",
        "the users list is for admins only (X-Cache: {}): {}",
        r.x_cache(),
        r.body
    );
}

/// The other direction: a user promoted to admin sees what admins see at once, not their cached user's view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_user_sees_what_admins_see_at_once() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let boss = new_admin(&app.store).await;
    let bob = token_for(f.bob);
    let alice_email = format!("{{ user(id: \"{}\") {{ email }} }}", f.alice);

    let seen = cached(&app, Some(&bob), &alice_email, json!({})).await;
    assert_eq!(seen["user"]["email"], Value::Null);
    mutate(
        &app,
        Some(&boss),
        "mutation($u: ID!) { setUserRole(userId: $u, role: ADMIN) { role } }",
        json!({ "u": id(f.bob) }),
    )
    .await;
    let r = query(&app, Some(&bob), &alice_email, json!({})).await;
    assert_eq!(
        r.ok()["user"]["email"],
        "alice@example.com",
        "Bob is an admin now (X-Cache: {})",
        r.x_cache()
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Every mutation purges what it changed: cache a read (hit confirmed), mutate, the next read is fresh
// ---------------------------------------------------------------------------------------------------------------

const FEED_AUTHORS: &str = "{ posts(first: 20) { nodes { id title author { id name } } } }";
const COMMENTS: &str =
    "query($id: ID!) { post(id: $id) { commentCount comments { nodes { id body } } } }";

/// `signUp` adds a user: an admin's cached users count is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_refreshes_the_users_list() {
    let app = TestApp::spawn().await;
    Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let count = "{ users(first: 2) { totalCount } }";
    let before = cached(&app, Some(&admin), count, json!({})).await["users"]["totalCount"]
        .as_i64()
        .expect("count");
    mutate(
        &app,
        None,
        "mutation($i: SignUpInput!) { signUp(input: $i) { user { id } } }",
        json!({ "i": { "email": "dana@example.com", "name": "Dana", "password": "correct horse battery" } }),
    )
    .await;
    let after = fresh(&app, Some(&admin), count, json!({})).await;
    assert_eq!(after["users"]["totalCount"], before + 1);
}

/// `updateProfile` renames a user: the feed showing them as author, and `user(id)`, are refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_profile_refreshes_the_author_everywhere() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let user = format!("{{ user(id: \"{}\") {{ name }} }}", f.alice);
    cached(&app, None, FEED_AUTHORS, json!({})).await;
    cached(&app, None, &user, json!({})).await;
    mutate(
        &app,
        Some(&token_for(f.alice)),
        "mutation { updateProfile(input: { name: \"Alice Kingsleigh\" }) { name } }",
        json!({}),
    )
    .await;
    let feed = fresh(&app, None, FEED_AUTHORS, json!({})).await;
    let alices: Vec<&Value> = feed["posts"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter(|n| n["author"]["id"] == json!(id(f.alice)))
        .collect();
    assert_eq!(alices.len(), 2);
    assert!(
        alices
            .iter()
            .all(|n| n["author"]["name"] == "Alice Kingsleigh"),
        "{feed}"
    );
    assert_eq!(
        fresh(&app, None, &user, json!({})).await["user"]["name"],
        "Alice Kingsleigh"
    );
}

/// `setUserRole` changes a role: `user(id) { role }` is refreshed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_user_role_refreshes_the_user() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let role = "query($id: ID!) { user(id: $id) { role } }";
    let vars = json!({ "id": id(f.bob) });
    assert_eq!(
        cached(&app, None, role, vars.clone()).await["user"]["role"],
        "USER"
    );
    mutate(
        &app,
        Some(&admin),
        "mutation($u: ID!) { setUserRole(userId: $u, role: ADMIN) { role } }",
        json!({ "u": id(f.bob) }),
    )
    .await;
    assert_eq!(fresh(&app, None, role, vars).await["user"]["role"], "ADMIN");
}

/// `createPost` (published) appears at once in the feed, in its author's posts, and as `post(id)` where a missing
/// post had been cached as `null`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_post_appears_in_every_cached_list_at_once() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let author_posts = format!(
        "{{ user(id: \"{}\") {{ posts {{ nodes {{ id }} }} }} }}",
        f.alice
    );
    // Ids are handed out in order, so the next post's id is one more than the highest.
    let next = f.alice_posts[1].max(f.bob_posts[1]).max(f.alice_draft) + 1;
    let next_vars = json!({ "id": id(next) });
    cached(&app, None, FEED, json!({})).await;
    cached(&app, None, &author_posts, json!({})).await;
    assert_eq!(
        cached(&app, None, POST_TITLE, next_vars.clone()).await["post"],
        Value::Null
    );

    let created = mutate(
        &app,
        Some(&token_for(f.alice)),
        "mutation { createPost(input: { title: \"Fresh off the press\", content: \"Brand new content here.\", published: true }) { id } }",
        json!({}),
    )
    .await;
    let new_id: i64 = created["createPost"]["id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("numeric");

    let feed = fresh(&app, None, FEED, json!({})).await;
    assert_eq!(
        node_ids(&feed["posts"]).first(),
        Some(&new_id),
        "newest first"
    );
    let posts = fresh(&app, None, &author_posts, json!({})).await;
    assert!(node_ids(&posts["user"]["posts"]).contains(&new_id));
    if new_id == next {
        let post = fresh(&app, None, POST_TITLE, next_vars).await;
        assert_eq!(post["post"]["title"], "Fresh off the press");
    } else {
        eprintln!(
            "post ids are not sequential here ({new_id} after {next}); cached null not checked"
        );
    }
}

/// `updatePost` refreshes `post(id)`, the feed, and search results (a new title can move a post in and out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_post_refreshes_the_post_the_feed_and_searches() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let post = f.alice_posts[0];
    let vars = json!({ "id": id(post) });
    let search = "query($s: String) { posts(filter: { search: $s }) { nodes { id } } }";
    let new_word = json!({ "s": "zeppelin" });
    let old_word = json!({ "s": "ownership" });
    cached(&app, None, POST_TITLE, vars.clone()).await;
    cached(&app, None, FEED, json!({})).await;
    assert!(node_ids(&cached(&app, None, search, new_word.clone()).await["posts"]).is_empty());
    assert_eq!(
        node_ids(&cached(&app, None, search, old_word.clone()).await["posts"]),
        vec![post]
    );

    mutate(
        &app,
        Some(&token_for(f.alice)),
        UPDATE_POST,
        json!({ "id": id(post), "i": { "title": "Zeppelin maintenance" } }),
    )
    .await;

    assert_eq!(
        fresh(&app, None, POST_TITLE, vars).await["post"]["title"],
        "Zeppelin maintenance"
    );
    let feed = fresh(&app, None, FEED, json!({})).await;
    assert!(feed.to_string().contains("Zeppelin maintenance"), "{feed}");
    assert!(!feed.to_string().contains("Ownership in Rust"), "{feed}");
    assert_eq!(
        node_ids(&fresh(&app, None, search, new_word).await["posts"]),
        vec![post]
    );
    assert!(node_ids(&fresh(&app, None, search, old_word).await["posts"]).is_empty());
}

/// `publishPost` makes a draft appear in the feed and as `post(id)` for everyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_post_appears_in_the_feed_and_by_id() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let vars = json!({ "id": id(f.alice_draft) });
    assert!(
        !node_ids(&cached(&app, None, FEED, json!({})).await["posts"]).contains(&f.alice_draft)
    );
    assert_eq!(
        cached(&app, None, POST_TITLE, vars.clone()).await["post"],
        Value::Null
    );
    mutate(
        &app,
        Some(&token_for(f.alice)),
        "mutation($id: ID!) { publishPost(id: $id) { published } }",
        vars.clone(),
    )
    .await;
    assert!(node_ids(&fresh(&app, None, FEED, json!({})).await["posts"]).contains(&f.alice_draft));
    assert_eq!(
        fresh(&app, None, POST_TITLE, vars).await["post"]["title"],
        "Secret draft"
    );
}

/// `unpublishPost` removes a post from the feed and makes `post(id)` `null` for anonymous callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_post_disappears_from_the_feed_and_by_id() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let post = f.alice_posts[0];
    let vars = json!({ "id": id(post) });
    assert!(node_ids(&cached(&app, None, FEED, json!({})).await["posts"]).contains(&post));
    assert_eq!(
        cached(&app, None, POST_TITLE, vars.clone()).await["post"]["title"],
        "Ownership in Rust"
    );
    mutate(
        &app,
        Some(&token_for(f.alice)),
        "mutation($id: ID!) { unpublishPost(id: $id) { published } }",
        vars.clone(),
    )
    .await;
    assert!(!node_ids(&fresh(&app, None, FEED, json!({})).await["posts"]).contains(&post));
    assert_eq!(
        fresh(&app, None, POST_TITLE, vars).await["post"],
        Value::Null
    );
}

/// `deletePost` makes `post(id)` `null` and removes the post from the feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_post_disappears_everywhere() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let post = f.bob_posts[0];
    let vars = json!({ "id": id(post) });
    assert!(node_ids(&cached(&app, None, FEED, json!({})).await["posts"]).contains(&post));
    assert_eq!(
        cached(&app, None, POST_TITLE, vars.clone()).await["post"]["title"],
        "Winter gardening"
    );
    mutate(
        &app,
        Some(&token_for(f.bob)),
        "mutation($id: ID!) { deletePost(id: $id) }",
        vars.clone(),
    )
    .await;
    assert!(!node_ids(&fresh(&app, None, FEED, json!({})).await["posts"]).contains(&post));
    assert_eq!(
        fresh(&app, None, POST_TITLE, vars).await["post"],
        Value::Null
    );
}

/// `addComment` refreshes the post's `commentCount` and `comments`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_comment_refreshes_the_count_and_the_comments() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let vars = json!({ "id": id(f.alice_posts[0]) });
    let before = cached(&app, None, COMMENTS, vars.clone()).await;
    assert_eq!(before["post"]["commentCount"], 3);
    mutate(
        &app,
        Some(&token_for(f.carol)),
        "mutation($i: AddCommentInput!) { addComment(input: $i) { id } }",
        json!({ "i": { "postId": id(f.alice_posts[0]), "body": "A fresh thought." } }),
    )
    .await;
    let after = fresh(&app, None, COMMENTS, vars).await;
    assert_eq!(after["post"]["commentCount"], 4);
    assert!(after.to_string().contains("A fresh thought."), "{after}");
}

/// `deleteComment` refreshes the post's `commentCount` and `comments`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_comment_refreshes_the_count_and_the_comments() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let vars = json!({ "id": id(f.alice_posts[0]) });
    let before = cached(&app, None, COMMENTS, vars.clone()).await;
    assert_eq!(before["post"]["commentCount"], 3);
    let bobs = before["post"]["comments"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|c| c["body"] == "Great explanation!")
        .expect("Bob's comment")["id"]
        .clone();
    mutate(
        &app,
        Some(&token_for(f.bob)),
        "mutation($id: ID!) { deleteComment(id: $id) }",
        json!({ "id": bobs }),
    )
    .await;
    let after = fresh(&app, None, COMMENTS, vars).await;
    assert_eq!(after["post"]["commentCount"], 2);
    assert!(!after.to_string().contains("Great explanation!"), "{after}");
}

// ---------------------------------------------------------------------------------------------------------------
// Explicit purge
// ---------------------------------------------------------------------------------------------------------------

/// `purgeCache(tags)`: admins only; returns how many distinct tags it purged (the cache checks purges when an
/// entry is read, so it does not count entries); the next read is computed anew.
/// Refused calls drop nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_cache_mutation_drops_the_tagged_entries() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let post = f.alice_posts[0];
    let vars = json!({ "id": id(post) });
    let content = "query($id: ID!) { post(id: $id) { content } }";
    let purge = "mutation($t: [String!]!) { purgeCache(tags: $t) }";
    let tags = json!({ "t": [format!("Post:{post}")] });
    // Two different queries that read the post, and one that does not.
    cached(&app, None, POST_TITLE, vars.clone()).await;
    cached(&app, None, content, vars.clone()).await;
    let other = json!({ "id": id(f.bob_posts[0]) });
    cached(&app, None, POST_TITLE, other.clone()).await;

    // Refused: nothing is dropped.
    let r = query(&app, Some(&token_for(f.bob)), purge, tags.clone()).await;
    assert_eq!(first_code(&r.body), "FORBIDDEN", "{}", r.body);
    let r = query(&app, None, purge, tags.clone()).await;
    assert_eq!(first_code(&r.body), "UNAUTHENTICATED", "{}", r.body);
    let r = query(&app, Some(&admin), purge, json!({ "t": [] })).await;
    assert_eq!(first_code(&r.body), "BAD_USER_INPUT", "{}", r.body);
    assert_eq!(
        query(&app, None, POST_TITLE, vars.clone()).await.x_cache(),
        "HIT"
    );

    let purged_before = app.metric("folio_cache_purged_total").await;
    let data = mutate(&app, Some(&admin), purge, tags.clone()).await;
    assert_eq!(data["purgeCache"], 1, "the one tag");
    assert_eq!(
        app.metric("folio_cache_purged_total").await - purged_before,
        1.0
    );
    assert_eq!(
        fresh(&app, None, POST_TITLE, vars.clone()).await["post"]["title"],
        "Ownership in Rust"
    );
    fresh(&app, None, content, vars).await;
    assert_eq!(
        query(&app, None, POST_TITLE, other).await.x_cache(),
        "HIT",
        "entries under other tags stay"
    );
    // A tag with nothing under it is purged all the same; a repeated tag counts once.
    let t = json!({ "t": ["Post:999999", "Post:999999"] });
    let data = mutate(&app, Some(&admin), purge, t).await;
    assert_eq!(data["purgeCache"], 1);
}

/// `POST /api/cache/purge` with `{"tags": [...]}` and an admin's bearer token: `200 {"purged": n}`. No token is
/// 401, a non-admin 403, a body that is not JSON or names no tag 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_endpoint_drops_the_tagged_entries_for_admins_only() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let admin = new_admin(&app.store).await;
    let post = f.alice_posts[0];
    let vars = json!({ "id": id(post) });
    cached(&app, None, POST_TITLE, vars.clone()).await;
    cached(&app, None, FEED, json!({})).await;
    let url = format!("{}/api/cache/purge", app.base);
    let body = json!({ "tags": [format!("Post:{post}")] });

    let r = app
        .client
        .post(&url)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = app
        .client
        .post(&url)
        .bearer_auth(token_for(f.bob))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = app
        .client
        .post(&url)
        .bearer_auth(&admin)
        .json(&json!({ "tags": [] }))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no tags");
    let r = app
        .client
        .post(&url)
        .bearer_auth(&admin)
        .header(header::CONTENT_TYPE, "application/json")
        .body("not json")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "not JSON");
    assert_eq!(
        query(&app, None, POST_TITLE, vars.clone()).await.x_cache(),
        "HIT",
        "refused purges drop nothing"
    );

    let r = app
        .client
        .post(&url)
        .bearer_auth(&admin)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), StatusCode::OK);
    let answer: Value = r.json().await.expect("JSON");
    // The one tag (which the post's entry and the feed's both read).
    assert_eq!(answer, json!({ "purged": 1 }));
    fresh(&app, None, POST_TITLE, vars).await;
    fresh(&app, None, FEED, json!({})).await;
}

// ---------------------------------------------------------------------------------------------------------------
// Single-flight
// ---------------------------------------------------------------------------------------------------------------

/// A page of posts with authors and comments, under an operation name (so two names are two keys of equal cost).
fn page(name: &str) -> String {
    format!(
        "query {name} {{ posts(first: 50) {{ nodes {{ id title author {{ name }} \
         comments(first: 10) {{ nodes {{ body author {{ name }} }} }} }} }} }}"
    )
}

/// Sixteen identical uncached queries at once execute once: the whole burst runs no more SQL than one execution
/// of an equivalent query, not sixteen times that, and every caller gets the same answer. The page is large and
/// the connections are opened beforehand, so the burst reaches the server while the first execution still runs.
/// On Redis one more execution is allowed: a request whose lookup was on its way when the first execution ended
/// missed (the entry was not written yet) and found no execution to join (CI saw it once under load).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_misses_execute_once() {
    let app = TestApp::spawn().await;
    bulk(&app.store, 50, 10).await;

    let (measured, one) = app.statements_for(&page("Measure"), json!({})).await;
    assert!(measured.get("errors").is_none(), "{measured}");
    assert!(one > 0, "an execution runs SQL");
    // Sixteen idle keep-alive connections, so no request of the burst waits for a handshake.
    for r in futures_util::future::join_all((0..16).map(|_| app.get("/healthz"))).await {
        assert_eq!(r.status(), StatusCode::OK);
    }

    let burst = page("Burst");
    let before = app.metric("folio_db_statements_total").await;
    let replies =
        futures_util::future::join_all((0..16).map(|_| query(&app, None, &burst, json!({})))).await;
    let statements = (app.metric("folio_db_statements_total").await - before) as u64;

    for r in &replies {
        assert_eq!(r.ok()["posts"], measured["data"]["posts"]);
        assert!(
            r.raw == replies[0].raw,
            "every caller gets the same answer:\n{}\n{}",
            String::from_utf8_lossy(&r.raw),
            String::from_utf8_lossy(&replies[0].raw)
        );
    }
    let misses = replies.iter().filter(|r| r.x_cache() == "MISS").count();
    eprintln!(
        "single-flight: 16 requests, {misses} MISS, {statements} statements (one execution: {one})"
    );
    assert!(
        misses >= 2,
        "the burst did not overlap the execution ({misses} MISS): nothing was shown"
    );
    let executions = if uses_redis() { 2 } else { 1 };
    assert!(
        statements <= executions * one,
        "16 concurrent identical misses ran {statements} statements; one execution runs {one}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Freshness under races
// ---------------------------------------------------------------------------------------------------------------

/// Posts the writers rewrite, readers, and how long it runs.
const RACE_POSTS: usize = 4;
const RACE_READERS: usize = 32;
const RACE_FOR: Duration = Duration::from_secs(5);

/// A race title, `race p<post> v<version>`.
fn race_title(post: usize, version: u64) -> String {
    format!("race p{post} v{version}")
}

/// `(post, version)` of a race title.
fn parse_race_title(title: &str) -> Option<(usize, u64)> {
    let (post, version) = title.strip_prefix("race p")?.split_once(" v")?;
    Some((post.parse().ok()?, version.parse().ok()?))
}

/// The freshness guarantee under load. One writer per post keeps renaming it (`v1`, `v2`, ... in commit order)
/// while many anonymous readers read `post(id) { title }` and the feed. Before each read, a reader notes the
/// newest version whose mutation had already *returned*; the read must show that version or a newer one. This
/// catches every way a result computed before a mutation could be served after it returned: an entry stored
/// after the purge by a slow reader, a purge sent after the answer, a read joining a computation that started
/// before the mutation. Ends with a quiet read of everything, which must be exactly the last version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_read_is_older_than_a_mutation_that_returned_before_it_began() {
    // `test_config` turns rate limiting off: these are thousands of requests from one address.
    let app = Arc::new(TestApp::spawn().await);
    let f = Fixture::create(&app.store).await;
    let token = Arc::new(token_for(f.alice));

    let mut ids = Vec::new();
    for p in 0..RACE_POSTS {
        let created = mutate(
            &app,
            Some(&token),
            "mutation($i: CreatePostInput!) { createPost(input: $i) { id } }",
            json!({ "i": { "title": race_title(p, 0), "content": "Rewritten again and again.", "published": true } }),
        )
        .await;
        ids.push(created["createPost"]["id"].as_str().expect("id").to_owned());
    }
    let ids = Arc::new(ids);
    // Per post: the newest version whose mutation has returned.
    let committed: Arc<Vec<AtomicU64>> =
        Arc::new((0..RACE_POSTS).map(|_| AtomicU64::new(0)).collect());
    let stale = Arc::new(Mutex::new(Vec::<String>::new()));
    let reads = Arc::new(AtomicUsize::new(0));
    let hits = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + RACE_FOR;

    let writers: Vec<JoinHandle<u64>> = (0..RACE_POSTS)
        .map(|p| {
            let (app, token, ids, committed) = (
                Arc::clone(&app),
                Arc::clone(&token),
                Arc::clone(&ids),
                Arc::clone(&committed),
            );
            tokio::spawn(async move {
                let mut version = 0;
                while Instant::now() < deadline {
                    version += 1;
                    let title = race_title(p, version);
                    let r = query(
                        &app,
                        Some(&token),
                        UPDATE_POST,
                        json!({ "id": ids[p], "i": { "title": title } }),
                    )
                    .await;
                    assert_eq!(r.ok()["updatePost"]["title"], json!(title));
                    committed[p].store(version, Ordering::SeqCst);
                }
                version
            })
        })
        .collect();

    let readers: Vec<JoinHandle<()>> = (0..RACE_READERS)
        .map(|r| {
            let (app, ids, committed, stale, reads, hits) = (
                Arc::clone(&app),
                Arc::clone(&ids),
                Arc::clone(&committed),
                Arc::clone(&stale),
                Arc::clone(&reads),
                Arc::clone(&hits),
            );
            tokio::spawn(async move {
                let mut n = r;
                while Instant::now() < deadline {
                    n += 1;
                    // Every version that had returned before this read began.
                    let floor: Vec<u64> =
                        committed.iter().map(|c| c.load(Ordering::SeqCst)).collect();
                    let (reply, seen): (Reply, Vec<(usize, u64)>) = if n % 3 == 0 {
                        let reply = query(&app, None, FEED, json!({})).await;
                        let seen = reply.ok()["posts"]["nodes"]
                            .as_array()
                            .expect("nodes")
                            .iter()
                            .filter_map(|n| parse_race_title(n["title"].as_str()?))
                            .collect();
                        (reply, seen)
                    } else {
                        let p = n % RACE_POSTS;
                        let reply = query(&app, None, POST_TITLE, json!({ "id": ids[p] })).await;
                        let title = reply.ok()["post"]["title"].as_str().expect("title");
                        let seen = vec![parse_race_title(title).expect("race title")];
                        (reply, seen)
                    };
                    reads.fetch_add(1, Ordering::Relaxed);
                    if reply.x_cache() == "HIT" {
                        hits.fetch_add(1, Ordering::Relaxed);
                    }
                    if n % 3 == 0 {
                        assert_eq!(seen.len(), RACE_POSTS, "the feed lists every race post");
                    }
                    for (p, version) in seen {
                        if version < floor[p] {
                            stale.lock().expect("lock").push(format!(
                                "{} read p{p} v{version} after v{} had returned (X-Cache: {})",
                                if n % 3 == 0 { "feed" } else { "post" },
                                floor[p],
                                reply.x_cache()
                            ));
                        }
                    }
                }
            })
        })
        .collect();

    let mut last = Vec::new();
    for w in writers {
        last.push(w.await.expect("writer"));
    }
    for r in readers {
        r.await.expect("reader");
    }
    let stale = stale.lock().expect("lock").clone();
    let reads = reads.load(Ordering::Relaxed);
    eprintln!(
        "race: {} writes, {reads} reads ({} hits), {} stale",
        last.iter().sum::<u64>(),
        hits.load(Ordering::Relaxed),
        stale.len()
    );
    assert!(
        last.iter().all(|&v| v >= 10),
        "every writer committed several versions: {last:?}"
    );
    assert!(reads >= 500, "readers kept reading: {reads}");
    assert!(
        stale.is_empty(),
        "{} reads were older than a mutation that had returned before they began, e.g.:\n{}",
        stale.len(),
        stale
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Quiet now: everything reads exactly the last version, twice (computed, then from the cache).
    for _ in 0..2 {
        for (p, id) in ids.iter().enumerate() {
            let r = query(&app, None, POST_TITLE, json!({ "id": id })).await;
            assert_eq!(
                r.ok()["post"]["title"],
                json!(race_title(p, last[p])),
                "X-Cache: {}",
                r.x_cache()
            );
        }
        let r = query(&app, None, FEED, json!({})).await;
        let titles = r.ok()["posts"]["nodes"].to_string();
        for (p, &v) in last.iter().enumerate() {
            assert!(titles.contains(&race_title(p, v)), "{titles}");
        }
    }
}

/// `folio_cache_ahead_total` and `folio_cache_ahead_dropped_total`.
async fn ahead(app: &TestApp) -> (f64, f64) {
    (
        app.metric("folio_cache_ahead_total").await,
        app.metric("folio_cache_ahead_dropped_total").await,
    )
}

/// On Redis, a document whose lookups keep missing (a post's page over ids that rotate) starts executing while
/// its lookup runs instead of after it. What a client sees does not change: a miss is answered and stored (the
/// next read of it is a hit with the same bytes); a read whose answer is stored is a hit (the execution started
/// for it is dropped, and the document is looked up first again); a mutation is seen by the next read; the
/// counters count each request once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_that_keeps_missing_executes_beside_its_lookup_and_answers_as_before() {
    if !uses_redis() {
        eprintln!(
            "skipped: only a Redis lookup is worth not waiting for (set FOLIO_TEST_REDIS_URL to run this)"
        );
        return;
    }
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let token = token_for(f.alice);
    let mut ids = Vec::new();
    for i in 0..40 {
        let created = mutate(
            &app,
            Some(&token),
            "mutation($i: CreatePostInput!) { createPost(input: $i) { id } }",
            json!({ "i": { "title": format!("Rotating {i}"), "content": "One of many pages.", "published": true } }),
        )
        .await;
        ids.push(created["createPost"]["id"].as_str().expect("id").to_owned());
    }
    let read = |n: usize| query(&app, None, POST_TITLE, json!({ "id": ids[n] }));

    // Twenty different posts: all misses. The document's first read parses it; from the seventeenth lookup in a
    // row that missed on, its executions start ahead.
    let (started, _) = ahead(&app).await;
    for n in 0..20 {
        let r = read(n).await;
        assert_eq!(r.x_cache(), "MISS", "{}", r.body);
        assert_eq!(r.ok()["post"]["title"], json!(format!("Rotating {n}")));
    }
    let (now, dropped) = ahead(&app).await;
    assert!(
        (1.0..=4.0).contains(&(now - started)),
        "executions started ahead after a run of misses: {}",
        now - started
    );

    // Ahead: a new post is a miss with its own answer, counted once, and stored.
    let before = counters(&app).await;
    let first = read(20).await;
    assert_eq!(first.x_cache(), "MISS", "{}", first.body);
    assert_eq!(first.ok()["post"]["title"], json!("Rotating 20"));
    let after = counters(&app).await;
    assert_eq!(
        (after.0 - before.0, after.1 - before.1),
        (0.0, 1.0),
        "one miss"
    );
    assert_eq!(ahead(&app).await, (now + 1.0, dropped), "started ahead");

    // Ahead again, but the answer is stored: a hit with the stored bytes, and the execution is dropped.
    let again = read(20).await;
    assert_eq!(
        again.x_cache(),
        "HIT",
        "the ahead execution stored its answer"
    );
    assert_eq!(again.raw, first.raw);
    let later = counters(&app).await;
    assert_eq!(
        (later.0 - after.0, later.1 - after.1),
        (1.0, 0.0),
        "one hit"
    );
    assert_eq!(ahead(&app).await, (now + 2.0, dropped + 1.0), "dropped");

    // The hit ended the run: the next read waits for its lookup.
    let r = read(21).await;
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(ahead(&app).await.0, now + 2.0, "looked up first");

    // A new run of misses, then a mutation: the next reads see it.
    for n in 22..40 {
        assert_eq!(read(n).await.x_cache(), "MISS");
    }
    let (running, _) = ahead(&app).await;
    assert!(running > now + 2.0, "ahead again after a new run of misses");
    mutate(
        &app,
        Some(&token),
        UPDATE_POST,
        json!({ "id": ids[20], "i": { "title": "Rotating 20, revised" } }),
    )
    .await;
    for _ in 0..3 {
        let r = read(20).await;
        assert_eq!(
            r.ok()["post"]["title"],
            "Rotating 20, revised",
            "X-Cache: {}",
            r.x_cache()
        );
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Two instances on one Redis
// ---------------------------------------------------------------------------------------------------------------

/// Lookups that arrive while one runs are answered by one Redis call: under load each request's share of a
/// round trip is what a lookup costs. Each request still gets its own answer: concurrent hits their own entry,
/// concurrent misses their own execution.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_lookups_share_redis_calls_and_each_gets_its_own_answer() {
    if !uses_redis() {
        eprintln!("skipped: lookups are batched on Redis (set FOLIO_TEST_REDIS_URL to run this)");
        return;
    }
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let vars = json!({ "id": id(f.alice_posts[0]) });
    let aliased =
        |name: String| format!("query($id: ID!) {{ {name}: post(id: $id) {{ id title }} }}");
    for i in 0..24 {
        cached(&app, None, &aliased(format!("hit{i}")), vars.clone()).await;
    }
    let calls_before = app.metric("folio_cache_lookup_calls_total").await;
    let asks: Vec<(String, &str)> = (0..24)
        .flat_map(|i| (0..4).map(move |_| (format!("hit{i}"), "HIT")))
        .chain((0..24).map(|i| (format!("miss{i}"), "MISS")))
        .collect();
    let documents: Vec<String> = asks.iter().map(|(name, _)| aliased(name.clone())).collect();
    let replies = futures_util::future::join_all(
        documents
            .iter()
            .map(|document| query(&app, None, document, vars.clone())),
    )
    .await;
    for ((name, status), reply) in asks.iter().zip(&replies) {
        assert_eq!(reply.x_cache(), *status, "{name}: {}", reply.body);
        assert_eq!(
            reply.body["data"][name.as_str()]["title"],
            "Ownership in Rust",
            "{name} answered with its own entry: {}",
            reply.body
        );
    }
    let calls = app.metric("folio_cache_lookup_calls_total").await - calls_before;
    assert!(
        calls < asks.len() as f64,
        "{calls} Redis calls for {} concurrent lookups",
        asks.len()
    );
}

/// Two instances, A in this process and B a separate `folio` process, on one database and one Redis prefix,
/// share entries, and a mutation through one is seen at once through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutation_through_one_instance_is_fresh_through_the_other() {
    if !uses_redis() {
        eprintln!(
            "skipped: instances share a cache only through Redis (set FOLIO_TEST_REDIS_URL to run this)"
        );
        return;
    }
    let (a, b, _) = two_instances().await;
    let f = Fixture::create(&a.store).await;
    let vars = json!({ "id": id(f.alice_posts[0]) });

    // Warmed through B, shared with A.
    cached(&b, None, POST_TITLE, vars.clone()).await;
    cached(&b, None, FEED, json!({})).await;
    let through_a = query(&a, None, POST_TITLE, vars.clone()).await;
    assert_eq!(through_a.x_cache(), "HIT", "one Redis, one cache");

    mutate(
        &a,
        Some(&token_for(f.alice)),
        UPDATE_POST,
        json!({ "id": id(f.alice_posts[0]), "i": { "title": "Changed through A" } }),
    )
    .await;
    assert_eq!(
        fresh(&b, None, POST_TITLE, vars.clone()).await["post"]["title"],
        "Changed through A"
    );
    let feed = fresh(&b, None, FEED, json!({})).await;
    assert!(feed.to_string().contains("Changed through A"), "{feed}");
    // And B's new entry serves A.
    let r = query(&a, None, POST_TITLE, vars).await;
    assert_eq!(r.x_cache(), "HIT");
    assert_eq!(r.ok()["post"]["title"], "Changed through A");
}

// ---------------------------------------------------------------------------------------------------------------
// Redis outages
// ---------------------------------------------------------------------------------------------------------------

/// Redis on a closed port: every query is still answered from the database (`BYPASS`), mutations succeed and are
/// seen at once, and the failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_everything_is_answered_from_the_database() {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.cache.mode = CacheMode::Redis;
    config.cache.redis = Some(RedisTarget::Url("redis://127.0.0.1:1".to_owned().into()));
    config.cache.redis_timeout = Duration::from_millis(100);
    let app = TestApp::spawn_with(db, config).await;
    let f = Fixture::create(&app.store).await;
    let vars = json!({ "id": id(f.alice_posts[0]) });

    for _ in 0..3 {
        let r = query(&app, None, POST_TITLE, vars.clone()).await;
        assert_eq!(r.ok()["post"]["title"], "Ownership in Rust");
        assert_eq!(r.x_cache(), "BYPASS");
        let r = query(&app, Some(&token_for(f.bob)), "{ me { email } }", json!({})).await;
        assert_eq!(r.ok()["me"]["email"], "bob@example.com");
        assert_eq!(r.x_cache(), "BYPASS");
    }
    let data = mutate(
        &app,
        Some(&token_for(f.alice)),
        UPDATE_POST,
        json!({ "id": id(f.alice_posts[0]), "i": { "title": "Written without Redis" } }),
    )
    .await;
    assert_eq!(data["updatePost"]["title"], "Written without Redis");
    let r = query(&app, None, POST_TITLE, vars).await;
    assert_eq!(r.ok()["post"]["title"], "Written without Redis");
    assert_eq!(r.x_cache(), "BYPASS");
    assert!(app.metric("folio_cache_errors_total").await > 0.0);
}

/// A TCP proxy in front of Redis that a test can cut (dropping every connection, closing new ones at once) and
/// restore: a partition between one instance and Redis, while Redis itself keeps running.
struct RedisProxy {
    addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    accept: JoinHandle<()>,
}

#[derive(Default)]
struct ProxyState {
    cut: bool,
    connections: Vec<JoinHandle<()>>,
}

impl RedisProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let shared = Arc::clone(&state);
        let accept = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let mut state = shared.lock().expect("proxy state");
                if state.cut {
                    drop(inbound);
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
        });
        Self {
            addr,
            state,
            accept,
        }
    }

    fn cut(&self) {
        let mut state = self.state.lock().expect("proxy state");
        state.cut = true;
        for connection in state.connections.drain(..) {
            connection.abort();
        }
    }

    fn restore(&self) {
        self.state.lock().expect("proxy state").cut = false;
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// An app whose Redis (`FOLIO_TEST_REDIS_URL`, a single server) is reached through a proxy the test can cut;
/// `None` without one.
async fn app_behind_a_proxy() -> Option<(RedisProxy, TestApp)> {
    let redis_url = std::env::var("FOLIO_TEST_REDIS_URL")
        .ok()
        .filter(|_| uses_redis())?;
    let mut via = reqwest::Url::parse(&redis_url).expect("FOLIO_TEST_REDIS_URL is a URL");
    let target = format!(
        "{}:{}",
        via.host_str().unwrap_or("127.0.0.1"),
        via.port().unwrap_or(6379)
    );
    let proxy = RedisProxy::start(target).await;
    via.set_host(Some("127.0.0.1")).expect("host");
    via.set_port(Some(proxy.addr.port())).expect("port");
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.cache.redis = Some(RedisTarget::Url(via.to_string().into()));
    config.cache.redis_timeout = Duration::from_millis(200);
    Some((proxy, TestApp::spawn_with(db, config).await))
}

/// Redis goes away between a cached read and a mutation: the mutation succeeds though its purge cannot be
/// delivered, reads meanwhile come from the database, and once Redis is back the old entry is never served
/// (the purge is delivered first); hits then resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undelivered_purge_is_delivered_before_anything_is_served_again() {
    let Some((proxy, app)) = app_behind_a_proxy().await else {
        eprintln!("skipped: needs a Redis to cut off (set FOLIO_TEST_REDIS_URL to run this)");
        return;
    };
    let f = Fixture::create(&app.store).await;
    let vars = json!({ "id": id(f.alice_posts[0]) });
    let old = cached(&app, None, POST_TITLE, vars.clone()).await;
    assert_eq!(old["post"]["title"], "Ownership in Rust");

    proxy.cut();
    let errors_before = app.metric("folio_cache_errors_total").await;
    let data = mutate(
        &app,
        Some(&token_for(f.alice)),
        UPDATE_POST,
        json!({ "id": id(f.alice_posts[0]), "i": { "title": "Written while cut off" } }),
    )
    .await;
    assert_eq!(data["updatePost"]["title"], "Written while cut off");
    let r = query(&app, None, POST_TITLE, vars.clone()).await;
    assert_eq!(r.ok()["post"]["title"], "Written while cut off");
    assert_eq!(r.x_cache(), "BYPASS", "cut off: answered from the database");
    assert!(app.metric("folio_cache_errors_total").await > errors_before);

    proxy.restore();
    let until = Instant::now() + Duration::from_secs(15);
    let mut sources = Vec::new();
    loop {
        let r = query(&app, None, POST_TITLE, vars.clone()).await;
        assert_eq!(
            r.ok()["post"]["title"],
            "Written while cut off",
            "never the entry cached before the undelivered purge (X-Cache: {}; so far {sources:?})",
            r.x_cache()
        );
        sources.push(r.x_cache().to_owned());
        if r.x_cache() == "HIT" {
            break;
        }
        assert!(
            Instant::now() < until,
            "hits never resumed after Redis came back: {sources:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("after the cut: {sources:?}");
}

/// An execution started beside its lookup (the document's lookups kept missing) whose lookup then fails is
/// answered from the database (`BYPASS`) and not stored: once Redis is back, the same read is a miss, then a
/// hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_ahead_of_a_failed_lookup_is_answered_but_not_stored() {
    let Some((proxy, app)) = app_behind_a_proxy().await else {
        eprintln!("skipped: needs a Redis to cut off (set FOLIO_TEST_REDIS_URL to run this)");
        return;
    };
    let posts = bulk(&app.store, 20, 0).await;
    let read = |n: usize| query(&app, None, POST_TITLE, json!({ "id": id(posts[n]) }));
    for n in 0..18 {
        assert_eq!(read(n).await.x_cache(), "MISS");
    }
    let (started, _) = ahead(&app).await;
    assert!(started > 0.0, "the document executes ahead by now");

    proxy.cut();
    let r = read(19).await;
    assert_eq!(r.x_cache(), "BYPASS", "cut off: answered from the database");
    assert_eq!(r.ok()["post"]["title"], "Bulk post number 19");
    assert_eq!(ahead(&app).await.0, started + 1.0, "it had started ahead");

    proxy.restore();
    let until = Instant::now() + Duration::from_secs(15);
    let mut sources = Vec::new();
    loop {
        let r = read(19).await;
        assert_eq!(r.ok()["post"]["title"], "Bulk post number 19");
        sources.push(r.x_cache().to_owned());
        if r.x_cache() != "BYPASS" {
            assert_eq!(r.x_cache(), "MISS", "nothing was stored while cut off");
            break;
        }
        assert!(Instant::now() < until, "Redis never came back: {sources:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read(19).await.x_cache(), "HIT");
}
