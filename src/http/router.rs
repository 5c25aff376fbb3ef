//! Routes and the layers around them: request ids, one log line per request, and HTTP metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::execution::Computed;
use super::{cache, graphql, health, webhooks};
use crate::auth::Authenticator;
use crate::billing::{self, Verifier};
use crate::cache::flight::SingleFlight;
use crate::cache::{Cache, Key};
use crate::config::EdgeConfig;
use crate::graphql::FolioSchema;
use crate::ratelimit::{Rate, RateLimiter};
use crate::store::Store;
use crate::telemetry::Metrics;

/// What every handler may use. One `Arc`: axum clones the state for every request and every layer, and
/// cloning a dozen `Arc`s field by field (and dropping them again) cost a tenth of a cache hit's CPU.
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
    pub schema: FolioSchema,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub cache: Arc<Cache>,
    /// Queries executing right now, by cache key (single-flight).
    pub flights: Arc<SingleFlight<Key, Arc<Computed>>>,
    /// Per-caller request buckets, and the rate (`None`: off).
    pub limiter: Arc<RateLimiter>,
    pub rate: Option<Rate>,
    pub metrics: Metrics,
    /// Parsed documents of recent operations (see `documents.rs`).
    pub documents: crate::http::documents::Documents,
    /// The SDL, rendered once at start-up.
    pub sdl: Arc<str>,
    pub graphiql: bool,
    /// Edge limits (body and document size, timeout, ...).
    pub edge: Arc<EdgeConfig>,
    /// The schema's complexity limit, which compiled operations check themselves (`graphql/compiled`).
    pub max_complexity: usize,
    /// Checks Stripe webhook signatures; `None` when no secret is configured (the webhook answers 503).
    pub stripe: Option<Arc<Verifier>>,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", id = %id, method = %req.method(), path = %req.uri().path())
        })
        .on_request(())
        .on_response(|res: &Response, latency: Duration, _span: &Span| {
            tracing::info!(status = res.status().as_u16(), duration_ms = latency.as_secs_f64() * 1000.0, "request");
        });
    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/schema.graphql", get(graphql::schema_sdl))
        .route("/api/cache/purge", post(cache::purge))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route(
            "/api/webhooks/stripe",
            post(webhooks::stripe).layer(DefaultBodyLimit::max(billing::MAX_BODY_BYTES)),
        )
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(cors(&state.edge.cors_origins))
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Cross-origin access for browsers. Requests carry credentials in `Authorization`, never cookies, so no
/// `Allow-Credentials`; the allowed request headers are the ones GraphQL clients send.
fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::ACCEPT,
            HeaderName::from_static("apollo-require-preflight"),
            HeaderName::from_static("x-apollo-operation-name"),
        ])
        .expose_headers([
            HeaderName::from_static("x-cache"),
            HeaderName::from_static("x-request-id"),
            header::ETAG,
            header::AGE,
            header::RETRY_AFTER,
        ])
        .max_age(Duration::from_secs(600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        // An empty list allows no origin: cross-origin browser calls fail their preflight.
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// Counts each response by status and observes its latency.
async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let res = next.run(req).await;
    state
        .metrics
        .http_duration
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .http_requests
        .with_label_values(&[res.status().as_str()])
        .inc();
    res
}
