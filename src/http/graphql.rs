//! `POST /graphql`, `GET /graphql` (queries, or GraphiQL for a browser) and `GET /schema.graphql`, following the
//! GraphQL Foundation's GraphQL-over-HTTP specification.
//!
//! - `Accept` picks the response type: `application/graphql-response+json` (request errors such as parse and
//!   validation failures then answer 4xx) or `application/json` (always 200 for a well-formed request). No
//!   `Accept`, or `*/*`: `application/json`. Neither acceptable: 406.
//! - `POST` takes `application/json` bodies only (415 otherwise). That is also the CSRF rule: a browser cannot
//!   send such a request cross-site without a CORS preflight, and `text/plain`, form and multipart bodies never
//!   execute. `GET` runs queries only: a mutation over GET is 405 with `Allow: POST`.
//! - A request names its document by `query` (text), `documentId` (a trusted document) or
//!   `extensions.persistedQuery` (APQ); see `operation::persisted`.
//! - A body that is not JSON, not an object (batches are refused), or has a non-string `query` or non-object
//!   `variables` answers 400 with a GraphQL-shaped error, never a 500.
//!
//! The operation itself runs in the pipeline (`operation`); this module only turns HTTP into an
//! `operation::Request` and the outcome back into a response (`response`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use serde::Deserialize;
use serde_json::Value as Json;

use std::net::IpAddr;

use super::live;
use super::response::{MediaType, rate_limited, request_error, respond};
use super::state::AppState;
use crate::error::{AppError, Code};
use crate::operation::{Accepts, Request};

/// The response type the client accepts, or the 406 to send.
fn negotiate(headers: &HeaderMap) -> Result<MediaType, Box<HttpResponse>> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return Ok(MediaType::Json);
    };
    let mut json = false;
    let mut any = false;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let kind = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        if refused {
            continue;
        }
        match kind.as_str() {
            "application/graphql-response+json" => return Ok(MediaType::GraphqlResponse),
            "application/json" => json = true,
            "*/*" | "application/*" => any = true,
            _ => {}
        }
    }
    if json || any {
        Ok(MediaType::Json)
    } else {
        Err(Box::new(request_error(
            StatusCode::NOT_ACCEPTABLE,
            Code::NotAcceptable,
            "Accept application/graphql-response+json or application/json.",
            MediaType::Json,
        )))
    }
}

/// The id `SetRequestIdLayer` put on the request (echoed in the `x-request-id` response header).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned()
}

/// What the HTTP layer knows about a GraphQL request besides its body.
struct HttpContext {
    accepts: Accepts,
    media: MediaType,
    /// The client's address (see `FOLIO_TRUSTED_PROXIES`).
    client: IpAddr,
    request_id: String,
}

/// The parts of a GraphQL request an HTTP body or query string carries.
#[derive(Default)]
struct Params {
    query: Option<String>,
    /// A trusted document's id (the GraphQL-over-HTTP persisted-documents proposal).
    document_id: Option<String>,
    operation_name: Option<String>,
    variables: async_graphql::Variables,
    extensions: async_graphql::Extensions,
}

impl Params {
    /// The text, a trusted document's id, or an APQ hash.
    fn names_a_document(&self) -> bool {
        self.query.is_some()
            || self.document_id.is_some()
            || self.extensions.contains_key("persistedQuery")
    }
}

/// Runs one GraphQL request for this HTTP request, as the viewer its `Authorization` header names. A header
/// that does not verify ends the request here with 401: it never runs as anonymous. With `Accept:
/// text/event-stream` the operation streams its results as server-sent events (`live::sse`).
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    params: Params,
    http: HttpContext,
    stream: bool,
) -> HttpResponse {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let viewer = match state.auth.viewer(authorization).await {
        Ok(viewer) => viewer,
        Err(err) => return unauthenticated(err, &http.request_id),
    };
    if let Some(wait) = state.rate_check(&viewer, http.client).await {
        return rate_limited(wait, http.media);
    }
    let request = Request {
        document: params.query,
        document_id: params.document_id,
        operation_name: params.operation_name,
        variables: params.variables,
        extensions: params.extensions,
        viewer,
        client: http.client,
        request_id: http.request_id,
        accepts: http.accepts,
        deadline: None,
        reveals_sdl: state.edge.reveals_sdl(gateway_secret(headers)),
    };
    if stream {
        // Boxed: a stream's future is large, and inline it would be moved along with every plain request's.
        return Box::pin(live::sse(state.clone(), request)).await;
    }
    let outcome = state.pipeline.run(request).await;
    respond(headers, outcome, http.media)
}

/// `Accept: text/event-stream`: the client wants GraphQL over server-sent events.
fn wants_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept
                .split(',')
                .any(|range| range.split(';').next().unwrap_or("").trim() == "text/event-stream")
        })
}

/// The client's address: the connection's peer, or, behind `trusted` reverse proxies, the address the
/// outermost trusted proxy saw (that many entries from the right of `X-Forwarded-For`). Entries further left
/// were written by the client and prove nothing.
fn client_address(headers: &HeaderMap, peer: IpAddr, trusted: usize) -> IpAddr {
    if trusted == 0 {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    hops.len()
        .checked_sub(trusted)
        .and_then(|i| hops.get(i))
        .and_then(|h| h.parse().ok())
        .unwrap_or(peer)
}

/// The answer to a request whose credentials failed: 401 with one `UNAUTHENTICATED` error (or 503 when the
/// database could not be asked who the token names).
fn unauthenticated(err: AppError, request_id: &str) -> HttpResponse {
    let status = err.status();
    let code = err.error_code();
    let message = err.public_message();
    if status == StatusCode::UNAUTHORIZED {
        tracing::info!(reason = %message, "bearer token rejected");
    }
    let mut extensions = serde_json::json!({ "code": code.as_str() });
    if code == Code::Internal {
        tracing::error!(error = ?err, "authentication failed");
        extensions["requestId"] = request_id.into();
    }
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": extensions }] });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    response
}

/// `POST /graphql`.
pub async fn post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
) -> HttpResponse {
    // The parts, not a `HeaderMap` extractor, which would copy every header.
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let stream = wants_event_stream(headers);
    let media = match negotiate(headers) {
        Ok(media) => media,
        Err(_) if stream => MediaType::GraphqlResponse,
        Err(response) => return *response,
    };
    let bad =
        |code: Code, message: &str| request_error(StatusCode::BAD_REQUEST, code, message, media);
    if !is_json(headers) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::UnsupportedMediaType,
            "POST /graphql takes a JSON body with `Content-Type: application/json`.",
            media,
        );
    }
    let bytes = match axum::body::to_bytes(body, state.edge.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return request_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::PayloadTooLarge,
                &format!(
                    "The request body is larger than {} bytes (FOLIO_MAX_BODY_BYTES).",
                    state.edge.max_body_bytes
                ),
                media,
            );
        }
    };
    let json: Json = match serde_json::from_slice(&bytes) {
        Ok(json) => json,
        Err(_) => return bad(Code::BadRequest, "The body is not valid JSON."),
    };
    let mut object = match json {
        Json::Object(object) => object,
        Json::Array(_) => {
            return bad(
                Code::BatchNotSupported,
                "Batched requests are not supported; send one operation per request.",
            );
        }
        _ => {
            return bad(
                Code::BadRequest,
                "The body must be a JSON object with a `query`.",
            );
        }
    };
    let mut request = Params::default();
    match object.remove("query") {
        Some(Json::String(query)) => request.query = Some(query),
        None | Some(Json::Null) => {}
        Some(_) => return bad(Code::BadRequest, "`query` must be a string."),
    }
    match object.remove("documentId") {
        Some(Json::String(id)) => request.document_id = Some(id),
        None | Some(Json::Null) => {}
        Some(_) => return bad(Code::BadRequest, "`documentId` must be a string."),
    }
    match object.remove("operationName") {
        None | Some(Json::Null) => {}
        Some(Json::String(name)) => request.operation_name = Some(name),
        Some(_) => return bad(Code::BadRequest, "`operationName` must be a string."),
    }
    match object.remove("variables") {
        None | Some(Json::Null) => {}
        Some(vars @ Json::Object(_)) => {
            request.variables = async_graphql::Variables::from_json(vars);
        }
        Some(_) => return bad(Code::BadRequest, "`variables` must be an object."),
    }
    match object.remove("extensions") {
        None | Some(Json::Null) => {}
        Some(ext @ Json::Object(_)) => match serde_json::from_value(ext) {
            Ok(ext) => request.extensions = ext,
            Err(_) => return bad(Code::BadRequest, "`extensions` must be an object."),
        },
        Some(_) => return bad(Code::BadRequest, "`extensions` must be an object."),
    }
    if !request.names_a_document() {
        return bad(Code::BadRequest, "The body has no `query`.");
    }
    let http = HttpContext {
        accepts: Accepts::Any,
        media,
        client: client_address(headers, peer.ip(), state.edge.trusted_proxies),
        request_id: request_id(headers),
    };
    execute(&state, headers, request, http, stream).await
}

/// `Content-Type: application/json` (any `charset` must be UTF-8).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| {
        let p = p.trim().to_ascii_lowercase();
        !p.starts_with("charset=") || p == "charset=utf-8" || p == "charset=\"utf-8\""
    })
}

/// The GET form of a GraphQL request, as the GraphQL-over-HTTP spec spells its parameters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    query: Option<String>,
    document_id: Option<String>,
    operation_name: Option<String>,
    /// JSON text.
    variables: Option<String>,
    /// JSON text.
    extensions: Option<String>,
}

/// `GET /graphql`: a WebSocket upgrade (`live`), GraphiQL for a browser that asks for HTML without a query,
/// server-sent events for `Accept: text/event-stream`, the query otherwise.
pub async fn get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
) -> HttpResponse {
    let (mut parts, _) = request.into_parts();
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if upgrade {
        let client = client_address(&parts.headers, peer.ip(), state.edge.trusted_proxies);
        let id = request_id(&parts.headers);
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(ws) => live::upgrade(state, ws, client, id),
            Err(rejection) => rejection.into_response(),
        };
    }
    let headers = &parts.headers;
    let params = Query::<GetParams>::try_from_uri(&parts.uri);
    let stream = wants_event_stream(headers);
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    let has_query = params.as_ref().is_ok_and(|Query(p)| {
        p.query.is_some() || p.document_id.is_some() || p.extensions.is_some()
    });
    if wants_html && !has_query && state.graphiql {
        return super::graphiql::page(state.live.graphiql_cdn.as_deref()).into_response();
    }
    let media = match negotiate(headers) {
        Ok(media) => media,
        Err(_) if stream => MediaType::GraphqlResponse,
        Err(response) => return *response,
    };
    let bad =
        |message: &str| request_error(StatusCode::BAD_REQUEST, Code::BadRequest, message, media);
    let Ok(Query(params)) = params else {
        return bad("The query string is malformed.");
    };
    let mut request = Params {
        query: params.query,
        document_id: params.document_id.filter(|id| !id.is_empty()),
        ..Params::default()
    };
    if let Some(name) = params.operation_name.filter(|n| !n.is_empty()) {
        request.operation_name = Some(name);
    }
    if let Some(text) = params.variables.filter(|t| !t.is_empty()) {
        match serde_json::from_str::<Json>(&text) {
            Ok(json @ Json::Object(_)) => {
                request.variables = async_graphql::Variables::from_json(json);
            }
            _ => return bad("`variables` must be a JSON object."),
        }
    }
    if let Some(text) = params.extensions.filter(|t| !t.is_empty()) {
        match serde_json::from_str(&text) {
            Ok(ext) => request.extensions = ext,
            Err(_) => return bad("`extensions` must be a JSON object."),
        }
    }
    if !request.names_a_document() {
        return bad("GET /graphql needs a `query` parameter.");
    }
    let http = HttpContext {
        // Over SSE a GET may subscribe too; a mutation never runs on GET.
        accepts: if stream {
            Accepts::NoMutations
        } else {
            Accepts::QueriesOnly
        },
        media,
        client: client_address(headers, peer.ip(), state.edge.trusted_proxies),
        request_id: request_id(headers),
    };
    execute(&state, headers, request, http, stream).await
}

/// The header a federation gateway presents `FOLIO_GATEWAY_SECRET` in.
pub const GATEWAY_SECRET_HEADER: &str = "x-folio-gateway-secret";

fn gateway_secret(headers: &HeaderMap) -> Option<&[u8]> {
    headers.get(GATEWAY_SECRET_HEADER).map(|v| v.as_bytes())
}

/// `GET /schema.graphql` on the public listener: the SDL, for code generators, to whoever `reveals_sdl` allows
/// (everyone while introspection is on); otherwise 404, as if there were none. The admin listener serves it
/// unconditionally (`schema_sdl_admin`).
pub async fn schema_sdl(State(state): State<AppState>, headers: HeaderMap) -> HttpResponse {
    if !state.edge.reveals_sdl(gateway_secret(&headers)) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(crate::error::plain_error_body(Code::NotFound, "Not found.")),
        )
            .into_response();
    }
    schema_sdl_admin(State(state)).await.into_response()
}

/// `GET /schema.graphql` on the admin listener.
pub async fn schema_sdl_admin(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.sdl.to_string(),
    )
}
