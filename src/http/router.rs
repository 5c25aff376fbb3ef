//! Routes and the layers around them: request ids, one log line per request, and HTTP metrics.

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

use super::state::AppState;
use super::{cache, graphql, health, webhooks};
use crate::billing;

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
