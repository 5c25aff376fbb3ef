//! Read replicas (`DATABASE_REPLICA_URLS`) against a real streaming replica that is deliberately behind
//! (`recovery_min_apply_delay`, set up by `.ci/run`; these tests need `FOLIO_TEST_REPLICA_URL` and PostgreSQL):
//! queries read from the replica when it has replayed what they depend on, never anything older than a write
//! that returned on any instance, and no cache entry is stored from a read that was behind; a replica that is too
//! far behind, or down, is skipped.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{
    Fixture, TestApp, TestDb, replica_server, test_config, token_for, two_instances, uses_redis,
};

const POST: &str =
    "query($id: ID!) { post(id: $id) { id title comments(first: 3) { totalCount } } }";

async fn routes(app: &TestApp, route: &str) -> f64 {
    app.metric(&format!("folio_replica_reads_total{{route=\"{route}\"}}"))
        .await
}

async fn title(app: &TestApp, id: i64) -> (String, String) {
    let (x_cache, data) = app.read(POST, json!({ "id": id.to_string() })).await;
    let title = data["post"]["title"].as_str().expect("title").to_owned();
    (x_cache, title)
}

/// Waits until the app's replica is in use and has replayed everything written so far.
async fn replica_caught_up(app: &TestApp, id: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let before = routes(app, "replica").await;
        // New variables (mostly): a cache miss, so the query executes.
        app.gql(
            "query($id: ID!, $n: Int!) { post(id: $id) { title comments(first: $n) { totalCount } } }",
            json!({ "id": id.to_string(), "n": rand_count() }),
        )
        .await;
        if routes(app, "replica").await > before {
            return;
        }
        assert!(Instant::now() < deadline, "the replica catches up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn needs_replica() -> bool {
    if replica_server().is_none() {
        eprintln!(
            "skipped: needs a streaming replica (set FOLIO_TEST_REPLICA_URL and FOLIO_TEST_DATABASE_URL)"
        );
        return false;
    }
    true
}

/// Writes through instance A; each is read at once through instance B (and A). The replica applies WAL a second
/// late, so B's first read of the post runs on the replica, finds it behind the write's mark and runs again on
/// the primary: every read shows the latest title, and what the cache keeps is never older either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_is_never_read_older_on_another() {
    if !needs_replica() {
        return;
    }
    if !uses_redis() {
        eprintln!("skipped: instances share write marks through Redis (set FOLIO_TEST_REDIS_URL)");
        return;
    }
    let (a, b, _) = two_instances().await;
    let f = Fixture::create(&a.store).await;
    let post = f.alice_posts[0];
    replica_caught_up(&b, post).await;
    let token = token_for(f.alice);

    for round in 0..6 {
        let new = format!("Version {round}");
        let body = a
            .gql_as(
                Some(&token),
                "mutation($id: ID!, $t: String!) { updatePost(id: $id, input: { title: $t }) { title } }",
                json!({ "id": post.to_string(), "t": new }),
            )
            .await;
        assert_eq!(body["data"]["updatePost"]["title"], new.as_str(), "{body}");
        for app in [&b, &a, &b] {
            let (x_cache, seen) = title(app, post).await;
            assert_eq!(
                seen, new,
                "never older than a write that returned ({x_cache})"
            );
        }
    }
    assert!(
        routes(&b, "primary_behind").await > 0.0,
        "reads found the replica behind and went to the primary"
    );
    // Once the replica has replayed the last write, reads use it again, and they are as new.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // What the reads above stored while the replica was behind is what is served now: the newest title.
    let mut stored = Vec::new();
    for app in [&a, &b] {
        let (x_cache, seen) = title(app, post).await;
        assert_eq!(seen, "Version 5", "no stale cache entry ({x_cache})");
        stored.push(x_cache);
    }
    assert!(
        stored.iter().any(|x| x == "HIT"),
        "the entries stored meanwhile were read back: {stored:?}"
    );
    let before = routes(&b, "replica").await;
    let mut seen_replica = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !seen_replica {
        // Skip the cache: a query whose variables are new each time.
        let body = b
            .gql(
                "query($id: ID!, $n: Int!) { post(id: $id) { title comments(first: $n) { totalCount } } }",
                json!({ "id": post.to_string(), "n": rand_count() }),
            )
            .await;
        assert_eq!(body["data"]["post"]["title"], "Version 5", "{body}");
        seen_replica = routes(&b, "replica").await > before;
        assert!(
            Instant::now() < deadline,
            "the replica serves once caught up"
        );
    }
}

fn rand_count() -> i64 {
    i64::from(uuid::Uuid::new_v4().as_bytes()[0] % 50) + 1
}

/// A replica further behind than `FOLIO_REPLICA_MAX_LAG_MS` is skipped: the primary answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_further_behind_than_the_limit_is_skipped() {
    if !needs_replica() {
        return;
    }
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.replicas.max_lag = Duration::from_millis(200);
    let app = TestApp::spawn_with(db, config).await;
    let f = Fixture::create(&app.store).await;
    let post = f.alice_posts[0];
    replica_caught_up(&app, post).await;

    // A write the replica receives now and applies a second later: meanwhile it is behind by more than 200 ms.
    let body = app
        .gql_as(
            Some(&token_for(f.alice)),
            "mutation($id: ID!) { updatePost(id: $id, input: { title: \"Later\" }) { title } }",
            json!({ "id": f.alice_posts[1].to_string() }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = routes(&app, "primary_no_replica").await;
    let body = app
        .gql(
            "query($id: ID!) { post(id: $id) { title } }",
            json!({ "id": f.alice_posts[1].to_string() }),
        )
        .await;
    assert_eq!(body["data"]["post"]["title"], "Later", "{body}");
    assert!(
        routes(&app, "primary_no_replica").await > before,
        "a lagging replica is skipped"
    );
}

/// A replica that cannot be reached costs nothing but reading from the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_is_down_is_skipped() {
    let db = TestDb::create().await;
    if !db.is_postgres() {
        eprintln!("skipped: read replicas are PostgreSQL's (set FOLIO_TEST_DATABASE_URL)");
        return;
    }
    let mut config = test_config(&db);
    config.replicas.urls = vec!["postgres://postgres@127.0.0.1:1/nothing".to_owned().into()];
    let app = TestApp::spawn_with(db, config).await;
    let f = Fixture::create(&app.store).await;
    let (_, seen) = title(&app, f.alice_posts[0]).await;
    assert_eq!(seen, "Ownership in Rust");
    assert!(routes(&app, "primary_no_replica").await >= 1.0);
    assert_eq!(routes(&app, "replica").await, 0.0);
}
