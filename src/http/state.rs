//! `AppState`: what every HTTP handler may use, built once by `App`.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::auth::Viewer;
use crate::billing::Verifier;
use crate::cache::Cache;
use crate::config::{EdgeConfig, LiveConfig};
use crate::operation::Pipeline;
use crate::ratelimit::{Decision, Rate, RateLimiter};
use crate::store::Store;
use crate::telemetry::Metrics;

/// One `Arc`: axum clones the state for every request and every layer, and cloning a dozen `Arc`s field by
/// field (and dropping them again) cost a tenth of a cache hit's CPU.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The contents of `AppState`.
pub struct Shared {
    /// Runs GraphQL operations (`operation`).
    pub pipeline: Pipeline,
    /// For readiness checks.
    pub store: Store,
    pub auth: Arc<Authenticator>,
    /// For explicit purges (`/api/cache/purge`) and the purges after a billing event.
    pub cache: Arc<Cache>,
    /// Per-caller request buckets, and the rate (`None`: off).
    pub limiter: Arc<RateLimiter>,
    pub rate: Option<Rate>,
    pub metrics: Metrics,
    /// The SDL, rendered once at start-up.
    pub sdl: Arc<str>,
    pub graphiql: bool,
    /// Edge limits and policies (body size, CORS, trusted proxies, ...).
    pub edge: Arc<EdgeConfig>,
    /// Checks Stripe webhook signatures; `None` when no secret is configured (the webhook answers 503).
    pub stripe: Option<Arc<Verifier>>,
    /// WebSocket and SSE limits, and where GraphiQL's assets come from.
    pub live: Arc<LiveConfig>,
    /// Becomes `true` when the server begins to shut down: live connections close (1001) and streams end.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Shared {
    /// The rate limit for one operation of `viewer` from `client` (per user, or per address when anonymous): how
    /// long to wait, if it is over. Every transport (HTTP, SSE, each WebSocket subscribe) asks this before the
    /// pipeline runs.
    pub async fn rate_check(&self, viewer: &Viewer, client: IpAddr) -> Option<std::time::Duration> {
        let rate = self.rate?;
        let key = match viewer {
            Viewer::User { id, .. } => format!("user:{id}"),
            Viewer::Anonymous => format!("ip:{client}"),
        };
        match self.limiter.check(&key, rate).await {
            Decision::Limited(wait) => {
                self.metrics.rate_limited.inc();
                Some(wait)
            }
            Decision::Allowed => None,
        }
    }
}
