//! One shared Redis connection for the response cache and the rate limiter, with the rules both need: a short
//! timeout on every call, and no waiting on a Redis that is down (one reconnect attempt a second; meanwhile
//! calls fail at once, and callers answer without Redis).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Least time between two attempts to (re)connect.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

pub struct RedisConn {
    client: redis::Client,
    manager_config: ConnectionManagerConfig,
    conn: Mutex<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<Option<Instant>>,
    timeout: Duration,
}

impl RedisConn {
    /// A client for `url` (not connected yet: the first call connects).
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| anyhow::anyhow!("REDIS_URL is not a valid Redis URL: {e}"))?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        Ok(Self {
            client,
            manager_config,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
            timeout,
        })
    }

    /// The client, for connections of their own (the live-data pub/sub listener).
    pub fn client(&self) -> &redis::Client {
        &self.client
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

    async fn connection(&self) -> Result<ConnectionManager, String> {
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
        let connect =
            ConnectionManager::new_with_config(self.client.clone(), self.manager_config.clone());
        match tokio::time::timeout(self.timeout * 4, connect).await {
            Ok(Ok(conn)) => {
                *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
                tracing::info!("connected to Redis");
                Ok(conn)
            }
            Ok(Err(err)) => Err(format!("cannot connect to Redis: {err}")),
            Err(_) => Err("connecting to Redis timed out".into()),
        }
    }

    /// Runs one call within the timeout. The error is a description for the log.
    pub async fn call<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Result<T, String>
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
