//! The bus: delivers every committed `Change` to every instance.
//!
//! - In process: a `tokio::sync::broadcast` channel. A change is delivered locally before `publish` returns,
//!   whatever happens to Redis, so subscribers on the writing instance never depend on Redis.
//! - Across instances (`REDIS_URL` set): the change is also published on one Redis pub/sub channel
//!   (`<FOLIO_CACHE_PREFIX>live`), tagged with this instance's id; every instance's listener re-broadcasts
//!   the changes of the others locally. Plain (unsharded) pub/sub: one channel, every change to every instance.
//!   On a Redis Cluster it is the same: a `PUBLISH` to any node reaches every node over the cluster bus, and
//!   the listener subscribes on one seed node (the next one after each failure). Sharded pub/sub would save
//!   the cluster that broadcast, but every instance needs every change anyway.
//! - Failures are counted (`folio_live_bus_errors_total`), never raised: a write has committed whatever the bus
//!   does. When the listener reconnects after losing Redis, and when a local receiver falls behind, the gap is
//!   announced as `Signal::Resync`: live queries re-run once, since they may have missed a purge.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::Change;
use crate::redis_conn::RedisConn;

/// Signals kept for receivers that have not read them yet; one further behind gets a `Resync`.
const LOCAL_CAPACITY: usize = 4096;

/// Least time between two attempts to re-subscribe to Redis.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// What the bus delivers.
#[derive(Clone, Debug)]
pub enum Signal {
    Changed(Arc<Change>),
    /// Changes may have been missed: whatever depends on them should be recomputed.
    Resync,
}

/// A change as it travels over Redis.
#[derive(Serialize, Deserialize)]
struct Envelope {
    /// The publishing instance, which has delivered the change locally already.
    origin: String,
    change: Change,
}

pub struct Bus {
    local: broadcast::Sender<Signal>,
    origin: String,
    redis: Option<Arc<RedisConn>>,
    channel: String,
    errors: prometheus::IntCounter,
    /// The listener has lost Redis (or never had it) since its last successful subscribe.
    lost: AtomicBool,
    /// The last publish failed.
    publish_failing: AtomicBool,
}

impl Bus {
    /// A bus for this instance; with `redis`, changes also travel over the channel named after `prefix`. Call
    /// `start` to begin receiving other instances' changes.
    pub fn new(
        redis: Option<Arc<RedisConn>>,
        prefix: &str,
        errors: prometheus::IntCounter,
    ) -> Self {
        let (local, _) = broadcast::channel(LOCAL_CAPACITY);
        Self {
            local,
            origin: uuid::Uuid::new_v4().to_string(),
            redis,
            channel: format!("{prefix}live"),
            errors,
            lost: AtomicBool::new(false),
            publish_failing: AtomicBool::new(false),
        }
    }

    /// Starts the Redis listener (nothing to do without Redis). Needs a Tokio runtime.
    pub fn start(self: &Arc<Self>) {
        if self.redis.is_some() {
            tokio::spawn(Arc::clone(self).listen());
        }
    }

    /// Signals from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.local.subscribe()
    }

    /// Delivers `change` here at once, then to the other instances.
    pub async fn publish(&self, change: Change) {
        if change.is_empty() {
            return;
        }
        let Some(redis) = &self.redis else {
            let _ = self.local.send(Signal::Changed(Arc::new(change)));
            return;
        };
        let envelope = Envelope {
            origin: self.origin.clone(),
            change,
        };
        let payload = serde_json::to_vec(&envelope).unwrap_or_default();
        let _ = self.local.send(Signal::Changed(Arc::new(envelope.change)));
        let channel = self.channel.clone();
        let published = redis
            .call(|mut conn| async move {
                redis::cmd("PUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await;
        match published {
            // Logged once per outage (every failure is counted): a busy instance would otherwise log each write.
            Err(err) => {
                self.errors.inc();
                if !self.publish_failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "changes cannot be published to the other instances");
                }
            }
            Ok(_) => {
                if self.publish_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("changes are published to the other instances again");
                }
            }
        }
    }

    /// Announces a gap to every local receiver (also used by tests and by the listener on reconnect).
    pub fn resync(&self) {
        let _ = self.local.send(Signal::Resync);
    }

    /// Receives the other instances' changes for as long as the process runs, re-subscribing after any loss.
    async fn listen(self: Arc<Self>) {
        loop {
            if let Err(err) = self.listen_once().await {
                if !self.lost.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %err, "lost the live-data channel on Redis; retrying");
                }
                self.errors.inc();
            }
            tokio::time::sleep(RECONNECT_EVERY).await;
        }
    }

    async fn listen_once(&self) -> Result<(), String> {
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        let connect = redis.pubsub_client().get_async_pubsub();
        let mut pubsub = tokio::time::timeout(redis.timeout() * 4, connect)
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        pubsub
            .subscribe(&self.channel)
            .await
            .map_err(|e| e.to_string())?;
        if self.lost.swap(false, Ordering::Relaxed) {
            tracing::info!("live-data channel on Redis is back; re-running live queries");
            self.resync();
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let Ok(envelope) = serde_json::from_slice::<Envelope>(message.get_payload_bytes())
            else {
                self.errors.inc();
                tracing::warn!("ignored a malformed message on the live-data channel");
                continue;
            };
            if envelope.origin != self.origin {
                let _ = self.local.send(Signal::Changed(Arc::new(envelope.change)));
            }
        }
        Err("the connection closed".to_owned())
    }
}
