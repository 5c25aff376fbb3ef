//! One shared Redis connection (a single server or a Redis Cluster) for everything Folio keeps in Redis, with
//! the rules every user needs: a short timeout on every call, and no waiting on a Redis that is down (one
//! (re)connect attempt a second; meanwhile calls fail at once, and callers answer without Redis).
//!
//! Callers see one connection type, [`Conn`], whichever the deployment runs: on a cluster each command is
//! routed by its key's slot, so every multi-key command or script must keep its keys in one slot (hash tags;
//! see `cache/redis.rs`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, RedisFuture};
use secrecy::{ExposeSecret, SecretString};

/// Least time between two attempts to (re)connect.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// Where Redis is: `REDIS_URL`, or the seed nodes of a cluster (`FOLIO_REDIS_CLUSTER_NODES`).
#[derive(Clone, Debug)]
pub enum RedisTarget {
    /// One server. May hold a password, hence secret.
    Url(SecretString),
    /// A Redis Cluster: `host:port` seed nodes and the nodes' password (`FOLIO_REDIS_PASSWORD`).
    Cluster {
        nodes: Vec<String>,
        password: Option<SecretString>,
    },
}

/// A connection to a single server or to a cluster; cheap to clone (both multiplex one socket per node).
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Client {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    Cluster {
        client: ClusterClient,
        /// One plain client per seed node, for the pub/sub listener (classic pub/sub reaches every node).
        nodes: Vec<redis::Client>,
    },
}

pub struct RedisConn {
    client: Client,
    conn: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<Option<Instant>>,
    timeout: Duration,
    /// Which seed node the next pub/sub connection tries (rotates on failure).
    next_node: AtomicUsize,
}

impl RedisConn {
    /// A client for `target` (not connected yet: the first call connects).
    pub fn new(target: &RedisTarget, timeout: Duration) -> anyhow::Result<Self> {
        let client = match target {
            RedisTarget::Url(url) => Client::Single {
                client: redis::Client::open(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))?,
                config: ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1)),
            },
            RedisTarget::Cluster { nodes, password } => {
                if nodes.is_empty() {
                    anyhow::bail!("FOLIO_REDIS_CLUSTER_NODES names no node");
                }
                let infos = nodes
                    .iter()
                    .map(|node| {
                        let info =
                            format!("redis://{node}")
                                .into_connection_info()
                                .map_err(|e| {
                                    anyhow::anyhow!(
                                        "FOLIO_REDIS_CLUSTER_NODES: `{node}` is not host:port: {e}"
                                    )
                                })?;
                        Ok(match password {
                            Some(pw) => {
                                let settings = info
                                    .redis_settings()
                                    .clone()
                                    .set_password(pw.expose_secret());
                                info.set_redis_settings(settings)
                            }
                            None => info,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                // Retries are the cluster client's way through a failover (MOVED, reconnects); they stay
                // within the call's timeout below.
                let cluster = ClusterClient::builder(infos.clone())
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(|e| anyhow::anyhow!("FOLIO_REDIS_CLUSTER_NODES: {e}"))?;
                let nodes = infos
                    .into_iter()
                    .map(redis::Client::open)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| anyhow::anyhow!("FOLIO_REDIS_CLUSTER_NODES: {e}"))?;
                Client::Cluster {
                    client: cluster,
                    nodes,
                }
            }
        };
        Ok(Self {
            client,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            timeout,
            next_node: AtomicUsize::new(0),
        })
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster { .. })
    }

    /// A client for a pub/sub connection of its own (the live-data listener). On a cluster it is one of the
    /// seed nodes, a different one after each call, so a listener whose node failed moves to another.
    pub fn pubsub_client(&self) -> &redis::Client {
        match &self.client {
            Client::Single { client, .. } => client,
            Client::Cluster { nodes, .. } => {
                let i = self.next_node.fetch_add(1, Ordering::Relaxed);
                &nodes[i % nodes.len()]
            }
        }
    }

    /// The timeout of one call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects now, so an unreachable Redis is reported at start (it is not fatal).
    pub async fn warm_up(&self) {
        if let Err(err) = self.connection().await {
            tracing::warn!(error = %err, "Redis is unreachable at start; serving without it until it is back");
        }
    }

    async fn connection(&self) -> Result<Conn, String> {
        if let Some(conn) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(conn);
        }
        // One task connects at a time, at most once a second; the others go without Redis meanwhile.
        let Ok(mut last) = self.connecting.try_lock() else {
            return Err("connecting to Redis".into());
        };
        if last.is_some_and(|at| at.elapsed() < RECONNECT_EVERY) {
            return Err("Redis was unreachable a moment ago".into());
        }
        *last = Some(Instant::now());
        let connected = match &self.client {
            Client::Single { client, config } => tokio::time::timeout(
                self.timeout * 4,
                ConnectionManager::new_with_config(client.clone(), config.clone()),
            )
            .await
            .map(|r| r.map(Conn::Single)),
            Client::Cluster { client, .. } => {
                tokio::time::timeout(self.timeout * 4, client.get_async_connection())
                    .await
                    .map(|r| r.map(Conn::Cluster))
            }
        };
        match connected {
            Ok(Ok(conn)) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                tracing::info!(cluster = self.is_cluster(), "connected to Redis");
                Ok(conn)
            }
            Ok(Err(err)) => Err(format!("cannot connect to Redis: {err}")),
            Err(_) => Err("connecting to Redis timed out".into()),
        }
    }

    /// Runs one call within the timeout. The error is a description for the log.
    pub async fn call<T, F>(&self, f: impl FnOnce(Conn) -> F) -> Result<T, String>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(self.timeout, f(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    }
}
