//! Routes and the layers around them (and the operators-only `admin_router`): request ids, one log line per request, HTTP metrics, CORS, and a panic
//! anywhere in a handler turned into a masked 500 in the route's error shape (the connection stays up).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use tower::{Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::state::AppState;
use super::{cache, graphiql, graphql, health, webhooks};
use crate::billing;
use crate::error::{Code, graphql_error_body, plain_error_body};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole HTTP surface, as one service (serve it with `axum::ServiceExt::into_make_service_with_connect_info`).
pub fn router(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            let span = tracing::info_span!(
                "request",
                id = %id,
                method = %req.method(),
                path = %req.uri().path(),
                otel.name = tracing::field::Empty,
                otel.kind = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
            );
            crate::telemetry::continue_trace(&span, req);
            span
        })
        .on_request(())
        .on_response(|res: &Response, latency: Duration, span: &Span| {
            span.record("http.response.status_code", res.status().as_u16());
            tracing::info!(
                status = res.status().as_u16(),
                duration_ms = latency.as_secs_f64() * 1000.0,
                "request"
            );
        });
    let mut routes = Router::new()
        .route(
            "/graphql",
            get(graphql::get)
                .post(graphql::post)
                .layer(CatchPanicLayer::custom(graphql_panic)),
        )
        .route("/schema.graphql", get(graphql::schema_sdl))
        .route("/graphiql/{version}/{file}", get(graphiql::asset))
        .route("/api/cache/purge", post(cache::purge))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/api/webhooks/stripe",
            post(webhooks::stripe).layer(DefaultBodyLimit::max(billing::MAX_BODY_BYTES)),
        );
    // Operational data stays off the public port once there is an admin one, and always in production.
    if state.edge.public_metrics {
        routes = routes.route("/metrics", get(health::metrics));
    }
    // One stack around the whole router, not `Router::layer`, which wraps every route in each layer separately:
    // a request then paid, per layer, a clone of a boxed service and a boxed future. Unmatched paths (404) and
    // wrong methods (405) pass through the same layers either way.
    ServiceBuilder::new()
        .map_response(|response: axum::http::Response<_>| response.map(Body::new))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(trace)
        .layer(cors(&state.edge.cors_origins))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .layer(CatchPanicLayer::custom(plain_panic))
        .service(routes.with_state(state))
}

/// The operators' listener (`FOLIO_ADMIN_BIND`): metrics, the SDL whatever the exposure rule, health. No CORS:
/// nothing here is for browsers.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .route("/schema.graphql", get(graphql::schema_sdl_admin))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .layer(CatchPanicLayer::custom(plain_panic))
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

/// A panic in a GraphQL handler: logged, answered as a masked `INTERNAL_SERVER_ERROR` in the GraphQL shape.
fn graphql_panic(panic: Box<dyn std::any::Any + Send>) -> Response {
    log_panic(panic.as_ref());
    let body = graphql_error_body(Code::Internal, "Internal server error");
    panic_response(body, "application/json; charset=utf-8")
}

/// A panic in a plain route: logged, answered as a masked `INTERNAL_SERVER_ERROR` in the plain shape.
fn plain_panic(panic: Box<dyn std::any::Any + Send>) -> Response {
    log_panic(panic.as_ref());
    let body = plain_error_body(Code::Internal, "Internal server error").to_string();
    panic_response(body.into_bytes(), "application/json")
}

fn log_panic(panic: &(dyn std::any::Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic payload".to_owned());
    tracing::error!(panic = %message, "a request handler panicked");
}

fn panic_response(body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_a_masked_500_in_the_routes_error_shape() {
        let response = graphql_panic(Box::new("boom: secret detail"));
        assert_eq!(response.status(), 500);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["errors"][0]["extensions"]["code"],
            "INTERNAL_SERVER_ERROR"
        );
        assert!(!String::from_utf8_lossy(&body).contains("secret"));
        let response = plain_panic(Box::new(String::from("boom")));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "INTERNAL_SERVER_ERROR");
    }
}
