//! Live data: what committed writes announce, how the announcement reaches every instance, and which running
//! subscriptions and live queries it wakes.
//!
//! - `Change`: the tags one committed write purged, plus the rows that subscription fields announce
//!   (`Event`). The purge is the event: every path that purges the cache announces its change (`Cache::commit`).
//! - `bus`: carries changes to every instance: an in-process broadcast, and Redis pub/sub when `REDIS_URL` is
//!   set. A gap (Redis lost and back, a receiver that fell behind) is announced as `Signal::Resync`.
//! - `registry`: running subscriptions and live queries, grouped so identical operations of one viewer scope
//!   share one execution, indexed by the tags their last run read. A change wakes exactly the groups whose
//!   tags it names; a group runs at most once at a time and a wake-up during a run schedules exactly one more.
//!
//! What a group runs is the operation pipeline's business (`operation::live`): this module never executes
//! GraphQL, so every execution goes through the same limits, authorization and error codes.

pub mod bus;
pub mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

pub use bus::{Bus, Signal};
pub use registry::{Emission, Execution, Membership, Registry};

/// What one committed write changed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Cache tags whose answers may differ now (`Post:7`, `Post:list`, ...).
    pub tags: Vec<String>,
    /// Rows subscription fields announce.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.events.is_empty()
    }
}

/// A row a subscription field announces, written by a committed mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    /// A post became public (created published, or a draft published).
    #[serde(rename_all = "camelCase")]
    PostPublished { post_id: i64 },
    /// A comment was added to a post.
    #[serde(rename_all = "camelCase")]
    CommentAdded { post_id: i64, comment_id: i64 },
}

/// Why an execution of a live operation runs: request data its subscription resolvers read.
#[derive(Clone, Debug)]
pub enum Trigger {
    /// The subscribe itself: check the arguments and the viewer's access, announce nothing.
    Start,
    /// Changes that touched what the last run read (empty after a `Resync`: something may have been missed).
    Changed(Vec<Arc<Change>>),
}

impl Trigger {
    /// The events of every change in this trigger, in order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        let changes: &[Arc<Change>] = match self {
            Trigger::Start => &[],
            Trigger::Changed(changes) => changes,
        };
        changes.iter().flat_map(|c| c.events.iter())
    }
}

/// Set by a subscription resolver whose stream has ended for good (`postUpdated` of a post that is gone):
/// the operation completes after this execution's results. Request data.
#[derive(Debug, Default)]
pub struct Finish(AtomicBool);

impl Finish {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The live-data counters and gauges in `/metrics`.
#[derive(Clone)]
pub struct LiveMetrics {
    /// Open WebSocket connections and SSE streams.
    pub connections: prometheus::IntGauge,
    /// Running subscriptions (subscription operations).
    pub subscriptions: prometheus::IntGauge,
    /// Running live queries (`@live`).
    pub live_queries: prometheus::IntGauge,
    /// `next` messages sent by a subscription or live query.
    pub events_sent: prometheus::IntCounter,
    /// Executions of groups woken by changes.
    pub reexecutions: prometheus::IntCounter,
    /// Connections closed because their outgoing queue overflowed.
    pub slow_consumers: prometheus::IntCounter,
    /// Bus messages that could not be published to or received from Redis.
    pub bus_errors: prometheus::IntCounter,
}
