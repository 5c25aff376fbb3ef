//! `POST /graphql`, `GET /graphql` (queries, or GraphiQL for a browser) and `GET /schema.graphql`.
//!
//! The handler gives each request its viewer and its own loaders, runs it, and then makes every error carry an
//! `extensions.code` (async-graphql's own parse and validation errors have none) and every masked internal error
//! carry the request id that the log line has too.

use async_graphql::http::GraphiQLSource;
use async_graphql::{ErrorExtensionValues, ParseRequestError, Response, ServerError, Value};
use async_graphql_axum::GraphQLResponse;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response as HttpResponse};
use serde::Deserialize;

use super::AppState;
use crate::auth::Viewer;
use crate::graphql::batch::Batched;
use crate::graphql::loaders::Loaders;

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

/// Runs one GraphQL request for this HTTP request.
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    request: async_graphql::Request,
) -> GraphQLResponse {
    let request_id = request_id(headers);
    let (loaders, dispatcher) = Loaders::new(state.store.clone());
    let request = request.data(Viewer::Anonymous).data(loaders);
    let mut response = Batched::new(dispatcher, state.schema.execute(request)).await;
    finish_errors(&mut response, &request_id);
    response.into()
}

/// Gives every error a code, and internal errors the request id.
fn finish_errors(response: &mut Response, request_id: &str) {
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
        Ok(req) => execute(&state, &headers, req.into_inner())
            .await
            .into_response(),
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
    execute(&state, &headers, request).await.into_response()
}

/// `GET /schema.graphql`: the SDL, for code generators.
pub async fn schema_sdl(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        state.sdl.to_string(),
    )
}
