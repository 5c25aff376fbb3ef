//! The test harness: a real Folio on an ephemeral port, its own database, and an HTTP client.
//!
//! Backend: SQLite in a temporary directory by default; PostgreSQL when `FOLIO_TEST_DATABASE_URL` points at a
//! server (any database on it: each test creates its own randomly named database there and drops it after).

use folio::operation::Pipeline;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use folio::auth::OwnTokens;
use folio::cache::{CacheConfig, CacheMode};
use folio::config::{AuthConfig, DocumentConfig, EdgeConfig, Environment};
use folio::domain::{DisplayName, Email};
pub use folio::redis_conn::RedisTarget;
use folio::store::seed::{NewComment, NewPost, NewUser};
use folio::store::{CreateAccount, Role, Store};
use folio::{App, Config};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where a test's database lives; dropping it removes the database.
pub enum TestDb {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDb {
    pub async fn create() -> Self {
        match std::env::var("FOLIO_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin_url) => {
                let name = format!("folio_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::connect(&admin_url)
                    .await
                    .expect("connect to FOLIO_TEST_DATABASE_URL");
                sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = replace_db_name(&admin_url, &name);
                TestDb::Postgres {
                    admin_url,
                    name,
                    url,
                }
            }
            None => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("folio.db").display());
                TestDb::Sqlite { _dir: dir, url }
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, TestDb::Postgres { .. })
    }

    /// Makes the database unreachable for the app: drops it on PostgreSQL (terminating the app's sessions).
    pub async fn drop_now(&self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let mut conn = PgConnection::connect(admin_url)
                .await
                .expect("admin connection");
            sqlx::query(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .expect("drop test database");
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside async context (and possibly while panicking): use a private runtime on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut conn = PgConnection::connect(&admin_url).await.ok()?;
                    sqlx::query(AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await
                    .ok()
                })
            })
            .join();
        }
    }
}

fn replace_db_name(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

/// The token secret of every test app.
pub const TEST_SECRET: &str = "test-secret-0123456789-0123456789-abcdef";

/// The test configuration: ephemeral port, no demo data, a known token secret, defaults otherwise.
pub fn test_config(db: &TestDb) -> Config {
    Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        database_url: db.url().to_owned(),
        replicas: test_replicas(db),
        demo_data: false,
        auth: AuthConfig {
            jwt_secret: Some(TEST_SECRET.into()),
            ..AuthConfig::default()
        },
        cache: test_cache_config(),
        // Tests fire bursts from one address; the rate-limit tests turn it back on.
        edge: EdgeConfig {
            rate_per_min: 0,
            signups_per_hour: 0,
            ..Config::default().edge
        },
        // Tests compare whole response bodies; the cost tests turn `extensions.cost` back on.
        documents: DocumentConfig {
            cost_extension: false,
            ..Config::default().documents
        },
        ..Config::default()
    }
}

/// The cache of every test app: a Redis Cluster when `FOLIO_TEST_REDIS_CLUSTER_NODES` is set, else Redis when
/// `FOLIO_TEST_REDIS_URL` is, under a prefix of its own (so tests never see each other's entries); in-process
/// otherwise.
pub fn test_cache_config() -> CacheConfig {
    let mut cache = Config::default().cache;
    if let Some(nodes) = cluster_nodes() {
        cache.mode = CacheMode::Redis;
        cache.redis = Some(RedisTarget::Cluster {
            nodes,
            password: None,
        });
    } else if let Some(url) = std::env::var("FOLIO_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        cache.mode = CacheMode::Redis;
        cache.redis = Some(RedisTarget::Url(url.into()));
    }
    cache.prefix = format!("folio-test:{}:", uuid::Uuid::new_v4().simple());
    cache
}

/// The test database's read replica, when the suite runs on PostgreSQL with a streaming replica of it
/// (`FOLIO_TEST_REPLICA_URL`, any database on the replica's server): the same database there.
pub fn test_replicas(db: &TestDb) -> folio::config::ReplicaConfig {
    let mut replicas = Config::default().replicas;
    if let (TestDb::Postgres { name, .. }, Some(url)) = (db, replica_server()) {
        replicas.urls = vec![replace_db_name(&url, name).into()];
    }
    replicas
}

/// `FOLIO_TEST_REPLICA_URL`: a streaming replica of `FOLIO_TEST_DATABASE_URL`'s server.
pub fn replica_server() -> Option<String> {
    std::env::var("FOLIO_TEST_REPLICA_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// The seed nodes of the Redis Cluster the suite runs against, if any (`FOLIO_TEST_REDIS_CLUSTER_NODES`).
pub fn cluster_nodes() -> Option<Vec<String>> {
    std::env::var("FOLIO_TEST_REDIS_CLUSTER_NODES")
        .ok()
        .filter(|n| !n.is_empty())
        .map(|n| n.split(',').map(str::to_owned).collect())
}

/// Whether the suite runs on Redis (a single server or a cluster).
pub fn uses_redis() -> bool {
    cluster_nodes().is_some() || std::env::var("FOLIO_TEST_REDIS_URL").is_ok_and(|u| !u.is_empty())
}

/// Makes `user_id` an admin and returns a token for them.
pub async fn admin_token(store: &Store, user_id: i64) -> String {
    store
        .set_user_role(user_id, Role::Admin)
        .await
        .expect("promote to admin");
    replicated(store).await;
    token_for(user_id)
}

/// Creates a fresh admin account and returns a token for it.
pub async fn new_admin(store: &Store) -> String {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let user = store
        .create_account(&CreateAccount {
            email: Email::parse(format!("admin-{tag}@example.com")).expect("an email"),
            name: DisplayName::parse("Admin".into()).expect("a name"),
            password_hash: "not-a-hash".into(),
        })
        .await
        .expect("admin account");
    admin_token(store, user.id).await
}

/// A Folio token for `user_id`, signed the way `login` signs them.
pub fn token_for(user_id: i64) -> String {
    let config = AuthConfig {
        jwt_secret: Some(TEST_SECRET.into()),
        ..AuthConfig::default()
    };
    OwnTokens::new(&config, Environment::Development)
        .expect("token issuer")
        .issue(user_id, Role::User)
        .expect("token")
}

/// A running Folio.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Store,
    /// The app's operation pipeline, for tests that run operations without a transport.
    pub pipeline: Option<Pipeline>,
    /// The operators' listener (`FOLIO_ADMIN_BIND`), as a base URL, when the app has one.
    pub admin: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// A `folio` process instead of an in-process server (`spawn_process`); killed on drop.
    process: Option<std::process::Child>,
    // Last: the database outlives the server.
    pub db: TestDb,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        let db = TestDb::create().await;
        let config = test_config(&db);
        Self::spawn_with(db, config).await
    }

    pub async fn spawn_with(db: TestDb, config: Config) -> Self {
        folio::install_crypto_provider();
        let app = App::build(&config).await.expect("app builds");
        let base = format!("http://{}", app.addr());
        let store = app.store().clone();
        let pipeline = Some(app.pipeline().clone());
        let admin = app.admin_addr().map(|addr| format!("http://{addr}"));
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = rx.await;
        }));
        TestApp {
            base,
            client: reqwest::Client::new(),
            store,
            pipeline,
            admin,
            stop: Some(tx),
            server: Some(server),
            process: None,
            db,
        }
    }

    /// POSTs a GraphQL operation anonymously and returns the JSON body.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.gql_as(None, query, variables).await
    }

    /// POSTs a GraphQL operation with an optional bearer token; asserts 200 and returns the JSON body.
    pub async fn gql_as(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let res = self
            .post_graphql_as(token, json!({ "query": query, "variables": variables }))
            .await;
        assert_eq!(res.status(), 200, "GraphQL over POST answers 200");
        res.json().await.expect("JSON body")
    }

    /// POSTs a query that must succeed without errors; returns `X-Cache` and `data`.
    pub async fn read(&self, query: &str, variables: Value) -> (String, Value) {
        let res = self
            .post_graphql_as(None, json!({ "query": query, "variables": variables }))
            .await;
        let x_cache = res
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        let body: Value = res.json().await.expect("JSON body");
        assert!(body.get("errors").is_none(), "{body}");
        (x_cache, body["data"].clone())
    }

    pub async fn post_graphql_as(&self, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = self
            .client
            .post(format!("{}/graphql", self.base))
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("request")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request")
    }

    /// The current value of a metric line (e.g. `folio_db_statements_total`), 0 if absent.
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// How many SQL statements `query` ran.
    pub async fn statements_for(&self, query: &str, variables: Value) -> (Value, u64) {
        self.statements_for_as(None, query, variables).await
    }

    /// How many SQL statements `query` ran for the bearer of `token` (authenticating costs one).
    pub async fn statements_for_as(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (Value, u64) {
        let before = self.metric("folio_db_statements_total").await;
        let body = self.gql_as(token, query, variables).await;
        let after = self.metric("folio_db_statements_total").await;
        (body, (after - before) as u64)
    }

    /// Asks the server to stop and waits (bounded) for it to finish.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => tokio::time::timeout(Duration::from_secs(10), handle).await??,
            None => Ok(()),
        }
    }

    pub fn server_finished(&self) -> bool {
        self.server.as_ref().is_none_or(|h| h.is_finished())
    }

    pub fn trigger_stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The error `code` of the first error in a GraphQL body.
pub fn first_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

/// Ids of a small, known data set.
pub struct Fixture {
    pub alice: i64,
    pub bob: i64,
    pub carol: i64,
    /// Alice's published posts, oldest first.
    pub alice_posts: Vec<i64>,
    pub alice_draft: i64,
    pub bob_posts: Vec<i64>,
}

fn at(minutes: i64) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("date")
        .with_timezone(&Utc)
        + TimeDelta::minutes(minutes)
}

impl Fixture {
    /// Alice (2 published posts, 1 draft), Bob (2 published posts), Carol (none); 3 comments on Alice's first
    /// post and 1 on Bob's first.
    pub async fn create(store: &Store) -> Self {
        let user = |email: &str, name: &str, m: i64| NewUser {
            email: email.into(),
            name: name.into(),
            role: "USER",
            plan: "FREE",
            created_at: at(m),
        };
        let users = store
            .insert_users(&[
                user("alice@example.com", "Alice Liddell", 0),
                user("bob@example.com", "Bob Marley", 1),
                user("carol@example.com", "Carol Danvers", 2),
            ])
            .await
            .expect("users");
        let (alice, bob, carol) = (users[0], users[1], users[2]);
        let post = |author_id: i64, title: &str, content: &str, published: bool, m: i64| NewPost {
            author_id,
            title: title.into(),
            content: content.into(),
            published,
            created_at: at(m),
        };
        let posts = store
            .insert_posts(&[
                post(
                    alice,
                    "Ownership in Rust",
                    "Borrowing rules explained with diagrams.",
                    true,
                    10,
                ),
                post(
                    bob,
                    "Winter gardening",
                    "What grows under snow and why kale wins.",
                    true,
                    11,
                ),
                post(
                    alice,
                    "Secret draft",
                    "Not ready for anyone to read yet.",
                    false,
                    12,
                ),
                post(
                    alice,
                    "Async Rust in practice",
                    "Tokio, futures and the pitfalls of blocking.",
                    true,
                    13,
                ),
                post(
                    bob,
                    "100% pure_joy of cooking",
                    "Recipes with exact percentages.",
                    true,
                    14,
                ),
            ])
            .await
            .expect("posts");
        let ids: Vec<i64> = posts.iter().map(|(id, _)| *id).collect();
        let comment = |post_id: i64, author_id: i64, body: &str, m: i64| NewComment {
            post_id,
            author_id,
            body: body.into(),
            created_at: at(m),
        };
        store
            .insert_comments(&[
                comment(ids[0], bob, "Great explanation!", 20),
                comment(ids[0], carol, "The diagrams helped.", 21),
                comment(ids[0], alice, "Thanks both.", 22),
                comment(ids[1], alice, "Kale forever.", 23),
            ])
            .await
            .expect("comments");
        replicated(store).await;
        Fixture {
            alice,
            bob,
            carol,
            alice_posts: vec![ids[0], ids[3]],
            alice_draft: ids[2],
            bob_posts: vec![ids[1], ids[4]],
        }
    }
}

/// Inserts `n` published posts by one new author, each with `comments_each` comments by another new user.
pub async fn bulk(store: &Store, n: usize, comments_each: usize) -> Vec<i64> {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let users = store
        .insert_users(&[
            NewUser {
                email: format!("w{tag}@example.com"),
                name: "Writer".into(),
                role: "USER",
                plan: "FREE",
                created_at: at(0),
            },
            NewUser {
                email: format!("r{tag}@example.com"),
                name: "Reader".into(),
                role: "USER",
                plan: "FREE",
                created_at: at(0),
            },
        ])
        .await
        .expect("users");
    let posts: Vec<NewPost> = (0..n)
        .map(|i| NewPost {
            author_id: users[0],
            title: format!("Bulk post number {i}"),
            content: "Generated for a statement-count test.".into(),
            published: true,
            created_at: at(i as i64),
        })
        .collect();
    let ids: Vec<i64> = store
        .insert_posts(&posts)
        .await
        .expect("posts")
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let reader = users[1];
    let comments: Vec<NewComment> = ids
        .iter()
        .flat_map(|&post_id| {
            (0..comments_each).map(move |j| NewComment {
                post_id,
                author_id: reader,
                body: format!("comment {j}"),
                created_at: at(j as i64),
            })
        })
        .collect();
    if !comments.is_empty() {
        store.insert_comments(&comments).await.expect("comments");
    }
    replicated(store).await;
    ids
}

/// With a read replica (`FOLIO_TEST_REPLICA_URL`), waits until it has replayed everything written so far. For
/// data a test writes straight into the database: Folio marks what its own writes change (see `replicas`), but
/// cannot know of writes made behind its back.
pub async fn replicated(store: &Store) {
    let Some(url) = replica_server() else {
        return;
    };
    let Ok(Some(target)) = store.current_wal_lsn().await else {
        return;
    };
    let options = folio::config::DatabaseOptions::new(&url, 1, Duration::from_secs(5));
    let counter = prometheus::IntCounter::new("replica_probe", "probe").expect("counter");
    let replica = Store::connect_replica(&options, counter).expect("FOLIO_TEST_REPLICA_URL");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let replayed = replica.replayed_lsn().await.ok().flatten();
        if replayed.is_some_and(|r| r >= target) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica catches up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Another Folio on the database of a running test app, from the same `config` (on Redis, the same cache prefix
/// too): what a second instance behind a load balancer looks like. It owns no database: its `db` is an empty
/// placeholder (ignore it), so the app that owns the database must outlive this one.
/// A second instance as a real `folio` process, on `config`'s database and cache (the same Redis prefix), for
/// tests that must show what separate processes see. The database belongs to whoever created it.
pub async fn spawn_process(config: &Config) -> TestApp {
    spawn_process_with(config, &[]).await
}

/// Two instances on one new database and cache, as behind a load balancer: `A` in this process (it owns the
/// database) and `B` a `folio` process. Returns them with their configuration.
pub async fn two_instances() -> (TestApp, TestApp, Config) {
    let db = TestDb::create().await;
    let config = test_config(&db);
    let a = TestApp::spawn_with(db, config.clone()).await;
    let b = spawn_process(&config).await;
    (a, b, config)
}

/// `spawn_process` with more environment variables (settings a `Config` does not carry into a process).
pub async fn spawn_process_with(config: &Config, env: &[(&str, &str)]) -> TestApp {
    use secrecy::ExposeSecret;
    use std::io::{BufRead, BufReader};
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_folio"));
    cmd.envs(env.iter().copied());
    cmd.args(["serve", "--bind", "127.0.0.1:0", "--no-demo"])
        .current_dir(std::env::temp_dir())
        .env("DATABASE_URL", &config.database_url)
        .env(
            "DATABASE_REPLICA_URLS",
            config
                .replicas
                .urls
                .iter()
                .map(|u| u.expose_secret().to_owned())
                .collect::<Vec<_>>()
                .join(","),
        )
        .env(
            "FOLIO_REPLICA_MAX_LAG_MS",
            config.replicas.max_lag.as_millis().to_string(),
        )
        .env("FOLIO_JWT_SECRET", TEST_SECRET)
        .env("FOLIO_RATE_LIMIT_PER_MIN", "0")
        .env("FOLIO_SIGNUPS_PER_HOUR", "0")
        .env("FOLIO_CACHE_PREFIX", &config.cache.prefix)
        .env("FOLIO_LOG", "info")
        .env("FOLIO_LOG_FORMAT", "json")
        .env("NO_COLOR", "1")
        .env_remove("FOLIO_ENV")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    match (&config.cache.mode, &config.cache.redis) {
        (CacheMode::Redis, Some(RedisTarget::Url(url))) => {
            cmd.env("FOLIO_CACHE", "redis")
                .env("REDIS_URL", url.expose_secret());
        }
        (CacheMode::Redis, Some(RedisTarget::Cluster { nodes, .. })) => {
            cmd.env("FOLIO_CACHE", "redis")
                .env("FOLIO_REDIS_CLUSTER_NODES", nodes.join(","));
        }
        (CacheMode::Off, _) => {
            cmd.env("FOLIO_CACHE", "off");
        }
        _ => {
            cmd.env("FOLIO_CACHE", "memory");
        }
    }
    let mut child = cmd.spawn().expect("start folio");
    let stdout = child.stdout.take().expect("piped stdout");
    // The "listening" log line carries the bound address; read it on a thread, then keep draining the pipe.
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let addr = lines.by_ref().map_while(Result::ok).find_map(|line| {
            serde_json::from_str::<Value>(&line)
                .ok()
                .and_then(|v| v["addr"].as_str().map(str::to_owned))
        });
        std::thread::spawn(move || for _ in lines {});
        addr
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), addr)
        .await
        .expect("folio reports its address in time")
        .expect("reader thread")
        .expect("folio logged its address");
    let metrics = prometheus::IntCounter::new("test_statements", "statements").expect("counter");
    let options =
        folio::config::DatabaseOptions::new(&config.database_url, 2, Duration::from_secs(5));
    let store = Store::connect(&options, metrics)
        .await
        .expect("store for the test");
    folio::install_crypto_provider();
    TestApp {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        store,
        pipeline: None,
        admin: None,
        stop: None,
        server: None,
        process: Some(child),
        db: TestDb::Sqlite {
            _dir: tempfile::tempdir().expect("tempdir"),
            url: config.database_url.clone(),
        },
    }
}

pub async fn spawn_instance(config: Config) -> TestApp {
    let placeholder = TestDb::Sqlite {
        _dir: tempfile::tempdir().expect("tempdir"),
        url: config.database_url.clone(),
    };
    TestApp::spawn_with(placeholder, config).await
}
