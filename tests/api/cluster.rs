//! The response cache on a Redis Cluster (`FOLIO_TEST_REDIS_CLUSTER_NODES`): entries live in different slots on
//! different nodes from the purges (`{m}`), and a purge through one instance still turns them away on every
//! instance; and a node failing over (its replica promoted) costs counted errors and answers from the database,
//! never a stale read.
//!
//! The rest of the cache, rate-limit, persisted-document and live-data suites run on the cluster too when the
//! variable is set (`.ci/run` does). The failover test stops a master, so it runs only when
//! `FOLIO_TEST_REDIS_CLUSTER_FAILOVER=1` (`.ci/run` runs it on its own, after the others).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Fixture, TestApp, bulk, cluster_nodes, token_for, two_instances};

const POST: &str = "query($id: ID!) { post(id: $id) { id title author { name } comments(first: 5) { totalCount nodes { body } } } }";

/// The cluster's seed nodes, for a test that stops nodes: only with `FOLIO_TEST_REDIS_CLUSTER_FAILOVER=1`.
fn nodes_to_stop() -> Option<Vec<String>> {
    let nodes = cluster_nodes()
        .filter(|_| std::env::var("FOLIO_TEST_REDIS_CLUSTER_FAILOVER").is_ok_and(|v| v == "1"));
    if nodes.is_none() {
        eprintln!(
            "skipped: stops a cluster node (set FOLIO_TEST_REDIS_CLUSTER_NODES and FOLIO_TEST_REDIS_CLUSTER_FAILOVER=1)"
        );
    }
    nodes
}

/// A plain connection to one cluster node.
async fn node(addr: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}"))
        .expect("node address")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to a cluster node")
}

/// The masters of the cluster: address -> the slot ranges it serves.
async fn masters(seed: &str) -> HashMap<String, Vec<(u16, u16)>> {
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut node(seed).await)
        .await
        .expect("CLUSTER NODES");
    text.lines()
        .filter(|l| {
            l.split(' ')
                .nth(2)
                .is_some_and(|f| f.contains("master") && !f.contains("fail"))
        })
        .map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let addr = fields[1].split('@').next().expect("addr").to_owned();
            let ranges = fields[8..]
                .iter()
                .filter(|r| !r.starts_with('['))
                .map(|r| match r.split_once('-') {
                    Some((a, b)) => (a.parse().expect("slot"), b.parse().expect("slot")),
                    None => (r.parse().expect("slot"), r.parse().expect("slot")),
                })
                .collect();
            (addr, ranges)
        })
        .collect()
}

/// The master serving `key`.
async fn master_of(seed: &str, key: &str) -> String {
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut node(seed).await)
        .await
        .expect("CLUSTER KEYSLOT");
    masters(seed)
        .await
        .into_iter()
        .find(|(_, ranges)| ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .map(|(addr, _)| addr)
        .expect("a master serves every slot")
}

/// Starts the cluster node `addr` again on its directory (where its cluster configuration is), as
/// `.ci/redis-cluster` started it, and waits until the cluster is whole.
async fn restart(addr: &str, dir: &str) {
    let port = addr.rsplit(':').next().expect("port");
    let started = std::process::Command::new("redis-server")
        .args([
            "--port",
            port,
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "yes",
            "--dir",
            dir,
        ])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
        ])
        .args([
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "2000",
        ])
        .args([
            "--logfile",
            &format!("{dir}/redis.log"),
            "--pidfile",
            &format!("{dir}/redis.pid"),
        ])
        .status();
    assert!(started.is_ok_and(|s| s.success()), "restart {addr}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(client) = redis::Client::open(format!("redis://{addr}"))
            && let Ok(mut c) = client.get_multiplexed_async_connection().await
        {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            let cluster: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut c)
                .await
                .unwrap_or_default();
            if info.contains("role:slave")
                && info.contains("master_link_status:up")
                && cluster.contains("cluster_state:ok")
            {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{addr} rejoins the cluster as a replica"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every cache entry key of `prefix` on the cluster, with the master holding it.
async fn entries(seed: &str, prefix: &str) -> HashMap<String, String> {
    let mut found = HashMap::new();
    for addr in masters(seed).await.into_keys() {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}e:*"))
            .query_async(&mut node(&addr).await)
            .await
            .expect("KEYS");
        found.extend(keys.into_iter().map(|key| (key, addr.clone())));
    }
    found
}

/// A post whose page (`POST`, read through `a`) is stored on another master than the purges (`{m}`); with the
/// page's key, the master holding it and the one holding the purges.
async fn post_away_from_meta(
    a: &TestApp,
    f: &Fixture,
    seed: &str,
    prefix: &str,
) -> (i64, String, String, String) {
    let meta = master_of(seed, &format!("{prefix}{{m}}seq")).await;
    for id in f
        .alice_posts
        .iter()
        .copied()
        .chain(bulk(&a.store, 20, 0).await)
    {
        let before = entries(seed, prefix).await;
        let (x_cache, _) = read(a, id).await;
        assert_eq!(x_cache, "MISS", "post {id} read for the first time");
        let (key, holder) = entries(seed, prefix)
            .await
            .into_iter()
            .find(|(key, _)| !before.contains_key(key))
            .expect("the page was stored");
        if holder != meta {
            return (id, key, holder, meta);
        }
    }
    panic!("some post's page lives on another master than {meta}");
}

/// The process id of the node at `addr`.
async fn pid_of(addr: &str) -> String {
    redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(&mut node(addr).await)
        .await
        .expect("INFO")
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .expect("process_id")
        .trim()
        .to_owned()
}

/// Sends `signal` to the process `pid`.
fn signal(pid: &str, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
}

/// A stopped node, continued when dropped (also when the test fails).
struct Stopped(String);

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

async fn read(app: &TestApp, id: i64) -> (String, Value) {
    let (x_cache, data) = app.read(POST, json!({ "id": id.to_string() })).await;
    (x_cache, data["post"].clone())
}

/// Reads until a hit, which must carry `title`.
async fn warm(app: &TestApp, id: i64, title: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (x_cache, post) = read(app, id).await;
        assert_eq!(post["title"], title, "never anything older");
        if x_cache == "HIT" {
            return;
        }
        assert!(Instant::now() < deadline, "the cache serves again in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn rename(app: &TestApp, token: &str, id: i64, title: &str) {
    let body = app
        .gql_as(
            Some(token),
            "mutation($id: ID!, $t: String!) { updatePost(id: $id, input: { title: $t }) { title } }",
            json!({ "id": id.to_string(), "t": title }),
        )
        .await;
    assert_eq!(body["data"]["updatePost"]["title"], title, "{body}");
}

/// A post page stored on another node than the purges; a mutation through one instance purges it, and the other
/// instance's next read is computed anew with the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_entries_on_every_node_from_every_instance() {
    let Some(nodes) = cluster_nodes() else {
        eprintln!(
            "skipped: needs a Redis Cluster (set FOLIO_TEST_REDIS_CLUSTER_NODES to run this)"
        );
        return;
    };
    let (a, b, config) = two_instances().await;
    let f = Fixture::create(&a.store).await;
    let (post, _, holder, meta) =
        post_away_from_meta(&a, &f, &nodes[0], &config.cache.prefix).await;
    assert_ne!(holder, meta);
    let title = read(&a, post).await.1["title"]
        .as_str()
        .expect("title")
        .to_owned();
    warm(&b, post, &title).await;
    let (x_cache, _) = read(&b, post).await;
    assert_eq!(x_cache, "HIT", "one cluster, one cache");

    rename(&a, &token_for(f.alice), post, "Renamed through A").await;
    let (x_cache, fresh) = read(&b, post).await;
    assert_eq!(
        (x_cache.as_str(), &fresh["title"]),
        ("MISS", &json!("Renamed through A"))
    );
    // A comment purges the post's comments the same way.
    let body = a
        .gql_as(
            Some(&token_for(f.bob)),
            "mutation($p: ID!) { addComment(input: { postId: $p, body: \"From the cluster test\" }) { id } }",
            json!({ "p": post.to_string() }),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
    let (x_cache, fresh) = read(&b, post).await;
    assert_eq!(x_cache, "MISS");
    assert!(
        fresh.to_string().contains("From the cluster test"),
        "{fresh}"
    );
}

/// The master holding a post's page is killed, and its replica (which has the page) is promoted. Meanwhile a
/// mutation renames the post: it succeeds, and every read on both instances, during and after the failover,
/// shows the new title, answered from the database while Redis cannot be trusted (`BYPASS`), with the errors
/// counted; once the purge is delivered the cache serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_costs_errors_and_database_reads_never_a_stale_one() {
    let Some(nodes) = nodes_to_stop() else {
        return;
    };
    let (a, b, config) = two_instances().await;
    let f = Fixture::create(&a.store).await;
    let token = token_for(f.alice);
    let seed = &nodes[0];

    let (post, key, victim, _) = post_away_from_meta(&a, &f, seed, &config.cache.prefix).await;
    let title = read(&a, post).await.1["title"]
        .as_str()
        .expect("title")
        .to_owned();
    warm(&a, post, &title).await;
    warm(&b, post, &title).await;

    let mut victim_conn = node(&victim).await;
    let pid = pid_of(&victim).await;
    let (_, dir): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("dir")
        .query_async(&mut victim_conn)
        .await
        .expect("CONFIG GET dir");
    let errors_before = a.metric("folio_cache_errors_total").await;
    signal(&pid, "-KILL");
    rename(&a, &token, post, "Renamed during the failover").await;
    let mut seen = HashMap::<String, usize>::new();
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        for (name, app) in [("A", &a), ("B", &b)] {
            let (x_cache, got) = read(app, post).await;
            assert_eq!(
                got["title"], "Renamed during the failover",
                "no stale read on {name} ({x_cache})"
            );
            *seen.entry(x_cache).or_default() += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.get("BYPASS").copied().unwrap_or(0) > 0,
        "answered from the database meanwhile: {seen:?}"
    );
    assert!(
        a.metric("folio_cache_errors_total").await > errors_before,
        "the failover's errors are counted"
    );
    // The killed node comes back (empty) as a replica of the promoted one, as the cluster was before.
    restart(&victim, &dir).await;
    // The replica took over; the purge gets delivered and both instances are served from the cache again.
    let promoted = master_of(seed, &key).await;
    assert_ne!(promoted, victim, "the replica was promoted");
    warm(&a, post, "Renamed during the failover").await;
    warm(&b, post, "Renamed during the failover").await;
}

/// Redis replicates asynchronously: a purge its master acknowledged could be lost in a crash, and a promoted
/// replica would then serve what it dropped. So a purge counts as delivered only once a replica has it. Here the
/// replica of the master holding a post's page is stopped (`SIGSTOP`): the rename's purge cannot reach it, so it
/// stays undelivered, both instances answer from the database (never the entry it dropped) with the errors
/// counted, and once the replica is back the purge is delivered and the cache serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lags_keeps_a_purge_undelivered_until_it_has_it() {
    let Some(nodes) = nodes_to_stop() else {
        return;
    };
    let (a, b, config) = two_instances().await;
    let f = Fixture::create(&a.store).await;
    let token = token_for(f.alice);
    let (post, _, holder, _) = post_away_from_meta(&a, &f, &nodes[0], &config.cache.prefix).await;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut node(&holder).await)
        .await
        .expect("INFO replication");
    // slave0:ip=127.0.0.1,port=7104,state=online,offset=...,lag=0
    let replica = info
        .lines()
        .find_map(|l| l.strip_prefix("slave0:"))
        .and_then(|l| {
            let field = |k: &str| {
                l.split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")).map(str::to_owned))
            };
            Some(format!("{}:{}", field("ip")?, field("port")?))
        })
        .expect("the master has a replica");
    let title = read(&a, post).await.1["title"]
        .as_str()
        .expect("title")
        .to_owned();
    // Stopped before the pages are stored, so the replica has never acknowledged those writes: a purge's `WAIT`
    // then cannot count it, whenever its once-a-second acknowledgement falls (stopped after the stores, it
    // sometimes had acknowledged them already, and the purge was rightly counted as delivered).
    let stopped = Stopped(pid_of(&replica).await);
    signal(&stopped.0, "-STOP");
    warm(&a, post, &title).await;
    warm(&b, post, &title).await;

    let errors_before = a.metric("folio_cache_errors_total").await;
    rename(&a, &token, post, "Renamed while a replica lagged").await;
    assert!(
        a.metric("folio_cache_errors_total").await > errors_before,
        "the purge that reached no replica is counted"
    );
    for _ in 0..10 {
        for (name, app) in [("A", &a), ("B", &b)] {
            let (x_cache, got) = read(app, post).await;
            assert_eq!(
                got["title"], "Renamed while a replica lagged",
                "no stale read on {name}"
            );
            assert_eq!(x_cache, "BYPASS", "answered from the database on {name}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stopped);
    // The replica catches up, the purge is delivered, and both instances are served from the cache again.
    warm(&a, post, "Renamed while a replica lagged").await;
    warm(&b, post, "Renamed while a replica lagged").await;
}
