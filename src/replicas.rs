//! Read replicas: which database a query reads from, without ever reading older data than a write that has
//! returned.
//!
//! - **Writes leave a mark.** Every committed change (`Cache::commit`, the one place writes report what they
//!   changed) records, for each of its tags, the primary's WAL position after the commit (`record`). The marks
//!   live where every instance sees them: in Redis when it is configured (`{t:<tag>}l`, the tag's slot), in
//!   process otherwise (then one instance only). A mark that cannot be written to Redis within 3 s is given up
//!   and counted (`folio_replica_mark_errors_total`): until the replicas have replayed that write, other
//!   instances could read it older from them (the same Redis outage usually sends their reads to the primary,
//!   as marks they cannot read count as not replayed).
//! - **Reads prove they are fresh.** A query picks a healthy replica and notes how far it has replayed
//!   (`pick`), runs there, and then checks the marks of the tags it read (`covers`): if the replica had
//!   replayed past all of them, the answer is as fresh as the primary's would have been when the query started.
//!   Otherwise (or if the marks cannot be read) the query runs again on the primary, and nothing from the
//!   replica run is answered or cached. `folio_replica_reads_total{route}` counts which happened.
//! - **Unhealthy replicas are skipped.** A background check every 250 ms takes a replica out while it does not
//!   answer or its replay is more than `FOLIO_REPLICA_MAX_LAG_MS` behind.
//!
//! Mutations, and everything inside them, always run on the primary (they never come here).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use prometheus::{IntCounter, IntCounterVec};
use secrecy::ExposeSecret;

use crate::config::{DatabaseOptions, ReplicaConfig};
use crate::redis_conn::RedisConn;
use crate::store::{Lsn, Store};

/// How often each replica's health is checked.
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// How long a tag's mark is kept: far longer than any replica may lag and still be used.
const MARK_TTL_SECS: u64 = 3600;
/// How long a write keeps trying to leave its marks before it answers.
const RECORD_FOR: Duration = Duration::from_secs(3);

// KEYS: {t:<tag>}l. ARGV: lsn, ttl. Raises the tag's mark to `lsn` (never lowers it).
const RAISE: &str = r"
local c = redis.call('GET', KEYS[1])
if not c or tonumber(c) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 0
";

/// Where a query reads, and how far that replica had replayed when the query started.
pub struct Pick {
    pub store: Store,
    pub replayed: Lsn,
}

/// Why a query read from the primary, or that it read from a replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Replica,
    /// No replica was up and close enough behind.
    PrimaryNoReplica,
    /// The replica had not replayed a write the answer depends on: run again on the primary.
    PrimaryBehind,
    /// The marks could not be read (Redis unreachable): run again on the primary.
    PrimaryUnknown,
    /// The replica run had errors (perhaps of the replica's own): run again on the primary.
    PrimaryAfterError,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::Replica => "replica",
            Route::PrimaryNoReplica => "primary_no_replica",
            Route::PrimaryBehind => "primary_behind",
            Route::PrimaryUnknown => "primary_unknown",
            Route::PrimaryAfterError => "primary_after_error",
        }
    }
}

struct Node {
    store: Store,
    healthy: AtomicBool,
}

enum Marks {
    Local(moka::sync::Cache<String, Lsn>),
    Redis {
        redis: Arc<RedisConn>,
        prefix: String,
        raise: redis::Script,
    },
}

/// The read replicas' metrics (registered with the others in `telemetry`).
#[derive(Clone)]
pub struct ReplicaMetrics {
    /// `folio_replica_reads_total{route}`: where queries read.
    pub reads: IntCounterVec,
    /// `folio_replica_mark_errors_total`: writes whose tags could not be marked in Redis in time.
    pub mark_errors: IntCounter,
}

pub struct Replicas {
    primary: Store,
    nodes: Vec<Node>,
    next: AtomicUsize,
    max_lag: Duration,
    marks: Marks,
    metrics: ReplicaMetrics,
}

impl Replicas {
    /// The replicas `config` lists (none: `None`), beside `primary`; marks in `redis` under `prefix` when
    /// given. Starts the health checks.
    pub fn start(
        config: &ReplicaConfig,
        primary: &Store,
        database: &DatabaseOptions,
        redis: Option<Arc<RedisConn>>,
        prefix: &str,
        metrics: ReplicaMetrics,
        statements: prometheus::IntCounter,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if config.urls.is_empty() {
            return Ok(None);
        }
        let nodes = config
            .urls
            .iter()
            .map(|url| {
                let options = DatabaseOptions {
                    url: url.expose_secret().to_owned(),
                    ..database.clone()
                };
                Ok(Node {
                    store: Store::connect_replica(&options, statements.clone())?,
                    healthy: AtomicBool::new(false),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let marks = match redis {
            Some(redis) => Marks::Redis {
                redis,
                prefix: prefix.to_owned(),
                raise: redis::Script::new(RAISE),
            },
            None => Marks::Local(
                moka::sync::Cache::builder()
                    .max_capacity(1_000_000)
                    .time_to_live(Duration::from_secs(MARK_TTL_SECS))
                    .build(),
            ),
        };
        let replicas = Arc::new(Self {
            primary: primary.clone(),
            nodes,
            next: AtomicUsize::new(0),
            max_lag: config.max_lag,
            marks,
            metrics,
        });
        tokio::spawn(check_health(Arc::downgrade(&replicas)));
        Ok(Some(replicas))
    }

    fn mark_key(prefix: &str, tag: &str) -> String {
        format!("{prefix}{{t:{tag}}}l")
    }

    /// Counts where a query read.
    pub fn count(&self, route: Route) {
        self.metrics.reads.with_label_values(&[route.label()]).inc();
    }

    /// A healthy replica and how far it has replayed, for a query about to start; `None`: read the primary.
    pub async fn pick(&self) -> Option<Pick> {
        let n = self.nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            let node = &self.nodes[(start + i) % n];
            if !node.healthy.load(Ordering::Relaxed) {
                continue;
            }
            match node.store.replayed_lsn().await {
                Ok(Some(replayed)) => {
                    return Some(Pick {
                        store: node.store.clone(),
                        replayed,
                    });
                }
                _ => node.healthy.store(false, Ordering::Relaxed),
            }
        }
        self.count(Route::PrimaryNoReplica);
        None
    }

    /// Whether a replica that had replayed up to `replayed` shows every write to `tags` that had returned: the
    /// route the query takes.
    pub async fn covers(&self, tags: &[String], replayed: Lsn) -> Route {
        match self.highest_mark(tags).await {
            Some(mark) if mark <= replayed => Route::Replica,
            Some(_) => Route::PrimaryBehind,
            None => Route::PrimaryUnknown,
        }
    }

    /// The highest mark of `tags` (0 when none has one); `None` if they cannot be read.
    async fn highest_mark(&self, tags: &[String]) -> Option<Lsn> {
        match &self.marks {
            Marks::Local(marks) => {
                Some(tags.iter().filter_map(|t| marks.get(t)).max().unwrap_or(0))
            }
            Marks::Redis { redis, prefix, .. } => {
                let reads = tags.iter().map(|tag| {
                    let key = Self::mark_key(prefix, tag);
                    redis.call(|mut conn| async move {
                        redis::cmd("GET")
                            .arg(key)
                            .query_async::<Option<u64>>(&mut conn)
                            .await
                    })
                });
                let mut highest = 0;
                for mark in futures_util::future::join_all(reads).await {
                    highest = highest.max(mark.ok()?.unwrap_or(0));
                }
                Some(highest)
            }
        }
    }

    /// Marks `tags` as written up to the primary's current WAL position. Called after a write committed and
    /// before it answers.
    pub async fn record(&self, tags: &[String]) {
        if tags.is_empty() {
            return;
        }
        let lsn = match self.primary.current_wal_lsn().await {
            Ok(Some(lsn)) => lsn,
            Ok(None) => return,
            Err(error) => {
                // Without the position, mark as far as the replicas can possibly be: until they pass it, reads of
                // these tags go to the primary.
                tracing::warn!(error = ?error, "could not read the primary's WAL position; marking the tags as newest");
                Lsn::MAX >> 1
            }
        };
        match &self.marks {
            Marks::Local(marks) => {
                for tag in tags {
                    marks
                        .entry(tag.clone())
                        .and_upsert_with(|old| old.map_or(lsn, |e| (*e.value()).max(lsn)));
                }
            }
            Marks::Redis {
                redis,
                prefix,
                raise,
            } => {
                let started = std::time::Instant::now();
                let mut left: Vec<&String> = tags.iter().collect();
                while !left.is_empty() {
                    let calls = left.iter().map(|tag| {
                        let mut invocation = raise.key(Self::mark_key(prefix, tag));
                        invocation.arg(lsn).arg(MARK_TTL_SECS);
                        redis.call(|mut conn| async move {
                            invocation.invoke_async::<i64>(&mut conn).await
                        })
                    });
                    let results = futures_util::future::join_all(calls).await;
                    left = left
                        .into_iter()
                        .zip(results)
                        .filter_map(|(tag, r)| r.is_err().then_some(tag))
                        .collect();
                    if left.is_empty() {
                        break;
                    }
                    if started.elapsed() >= RECORD_FOR {
                        self.metrics.mark_errors.inc();
                        tracing::error!(
                            tags = left.len(),
                            "could not mark written tags in Redis; replicas may serve older data for them on \
                             other instances until they have replayed the write"
                        );
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Marks each replica healthy while it answers and its replay is at most `max_lag` behind.
async fn check_health(replicas: std::sync::Weak<Replicas>) {
    loop {
        let Some(this) = replicas.upgrade() else {
            return;
        };
        for (i, node) in this.nodes.iter().enumerate() {
            let status = node.store.replica_status().await;
            let healthy = matches!(&status, Ok(Some(s)) if s.lag <= this.max_lag);
            let was = node.healthy.swap(healthy, Ordering::Relaxed);
            if was != healthy {
                match &status {
                    Ok(Some(s)) => tracing::info!(
                        replica = i,
                        healthy,
                        lag_ms = s.lag.as_millis() as u64,
                        "replica health changed"
                    ),
                    Ok(None) => tracing::warn!(
                        replica = i,
                        "DATABASE_REPLICA_URLS names a server that is not a replica; not reading from it"
                    ),
                    Err(error) => {
                        tracing::warn!(replica = i, error = ?error, "replica unreachable; reading from the primary")
                    }
                }
            }
        }
        drop(this);
        tokio::time::sleep(CHECK_EVERY).await;
    }
}
