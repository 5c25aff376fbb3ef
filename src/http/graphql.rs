//! `POST /graphql`, `GET /graphql` (queries, or GraphiQL for a browser) and `GET /schema.graphql`.
//!
//! The handler gives each request its viewer and its own loaders, runs it, and then makes every error carry an
//! `extensions.code` (async-graphql's own parse and validation errors have none) and every masked internal error
//! carry the request id that the log line has too.

use async_graphql::http::GraphiQLSource;
use async_graphql::{ErrorExtensionValues, ParseRequestError, Response, ServerError, Value};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response as HttpResponse};
use serde::Deserialize;

use super::AppState;
use crate::error::AppError;

/// A GraphQL request whose HTTP form could not be read answers with a GraphQL-shaped error, never a bare 400.
pub struct Rejection(ParseRequestError);

impl From<ParseRequestError> for Rejection {
    fn from(err: ParseRequestError) -> Self {
        Self(err)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> HttpResponse {
        let (status, message) = match &self.0 {
            ParseRequestError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large".to_owned(),
            ),
            ParseRequestError::UnsupportedBatch => (
                StatusCode::BAD_REQUEST,
                "batched requests are not supported".to_owned(),
            ),
            other => (
                StatusCode::BAD_REQUEST,
                format!("malformed GraphQL request: {other}"),
            ),
        };
        error_response(status, &message)
    }
}

/// A request-level error in the GraphQL response shape.
fn error_response(status: StatusCode, message: &str) -> HttpResponse {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": "BAD_REQUEST" } }] });
    (status, axum::Json(body)).into_response()
}

type GraphQLRequest = async_graphql_axum::GraphQLRequest<Rejection>;

/// The id `SetRequestIdLayer` put on the request (echoed in the `x-request-id` response header).
fn request_id(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_owned()
}

/// Runs one GraphQL request for this HTTP request, as the viewer its `Authorization` header names. A header
/// that does not verify ends the request here with 401: it never runs as anonymous.
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> HttpResponse {
    let request_id = request_id(headers);
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let viewer = match state.auth.viewer(authorization).await {
        Ok(viewer) => viewer,
        Err(err) => return unauthenticated(err, &request_id),
    };
    super::execution::run(state, headers, request, viewer, request_id).await
}

/// The answer to a request whose credentials failed: 401 with one `UNAUTHENTICATED` error (or 503 when the
/// database could not be asked who the token names).
fn unauthenticated(err: AppError, request_id: &str) -> HttpResponse {
    let status = err.status();
    let code = err.code();
    let message = err.public_message();
    if status == StatusCode::UNAUTHORIZED {
        tracing::info!(reason = %message, "bearer token rejected");
    }
    let mut extensions = serde_json::json!({ "code": code });
    if code == "INTERNAL_SERVER_ERROR" {
        tracing::error!(error = ?err, "authentication failed");
        extensions["requestId"] = request_id.into();
    }
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": extensions }] });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    response
}

/// Gives every error a code, and internal errors the request id.
pub(crate) fn finish_errors(response: &mut Response, request_id: &str) {
    for err in &mut response.errors {
        let code = err
            .extensions
            .as_ref()
            .and_then(|ext| ext.get("code"))
            .and_then(|v| {
                if let Value::String(s) = v {
                    Some(s.clone())
                } else {
                    None
                }
            });
        let code = match code {
            Some(code) => code,
            None => {
                let code = default_code(err);
                extensions(err).set("code", code);
                code.to_owned()
            }
        };
        if code == "INTERNAL_SERVER_ERROR" {
            extensions(err).set("requestId", request_id);
        }
    }
}

fn extensions(err: &mut ServerError) -> &mut ErrorExtensionValues {
    err.extensions
        .get_or_insert_with(ErrorExtensionValues::default)
}

/// The code for an error async-graphql raised itself: before execution (no path) the document could not be
/// parsed or failed validation (limits included); during execution an argument could not be coerced.
fn default_code(err: &ServerError) -> &'static str {
    if !err.path.is_empty() {
        "BAD_USER_INPUT"
    } else if err.message.starts_with(" --> ")
        || err.message.contains("expected") && err.locations.len() == 1
    {
        "GRAPHQL_PARSE_FAILED"
    } else {
        "GRAPHQL_VALIDATION_FAILED"
    }
}

/// `POST /graphql`.
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    req: Result<GraphQLRequest, Rejection>,
) -> HttpResponse {
    match req {
        Ok(req) => execute(&state, &headers, req.into_inner()).await,
        Err(rejection) => rejection.into_response(),
    }
}

/// The GET form of a GraphQL request, as the GraphQL-over-HTTP spec spells its parameters.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    query: Option<String>,
    operation_name: Option<String>,
    /// JSON text.
    variables: Option<String>,
    /// JSON text.
    extensions: Option<String>,
}

/// `GET /graphql`: GraphiQL for a browser that asks for HTML without a query, the query otherwise.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> HttpResponse {
    let Ok(Query(params)) = params else {
        return error_response(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let Some(query) = params.query else {
        let wants_html = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|accept| accept.contains("text/html"));
        if wants_html && state.graphiql {
            let page = GraphiQLSource::build()
                .endpoint("/graphql")
                .title("Folio GraphiQL")
                .finish();
            return Html(page).into_response();
        }
        return error_response(
            StatusCode::BAD_REQUEST,
            "GET /graphql needs a `query` parameter",
        );
    };
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name {
        request = request.operation_name(name);
    }
    if let Some(text) = params.variables.filter(|t| !t.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(json @ serde_json::Value::Object(_)) => {
                request = request.variables(async_graphql::Variables::from_json(json));
            }
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "`variables` must be a JSON object",
                );
            }
        }
    }
    if let Some(text) = params.extensions.filter(|t| !t.is_empty()) {
        match serde_json::from_str(&text) {
            Ok(ext) => request.extensions = ext,
            Err(_) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "`extensions` must be a JSON object",
                );
            }
        }
    }
    execute(&state, &headers, request).await
}

/// `GET /schema.graphql`: the SDL, for code generators.
pub async fn schema_sdl(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.sdl.to_string(),
    )
}
