//! Routes and the layers around them: request ids, one log line per request, and HTTP metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::HeaderName;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::{graphql, health, webhooks};
use crate::auth::Authenticator;
use crate::billing::{self, Verifier};
use crate::graphql::FolioSchema;
use crate::store::Store;
use crate::telemetry::Metrics;

/// What every handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub schema: FolioSchema,
    pub store: Store,
    pub auth: Arc<Authenticator>,
    pub metrics: Metrics,
    /// The SDL, rendered once at start-up.
    pub sdl: Arc<str>,
    pub graphiql: bool,
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
        .layer(trace)
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
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
