//! Turning an operation's outcome into an HTTP response: status, media type, `Cache-Control` (`public|private,
//! max-age=N` when cacheable, otherwise `no-store`), `ETag` on cacheable answers (a matching `If-None-Match`
//! gets `304`), `Age` on hits, `X-Cache` (`HIT`, `MISS`, `BYPASS`), `Vary`, and `Retry-After` when
//! rate-limited. Also the request-level errors the edge answers before any operation runs.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{Code, graphql_error_body};
use crate::operation::{CacheStatus, Outcome, Status};

/// The response media type the client asked for (`Accept`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: request errors get 4xx statuses.
    GraphqlResponse,
    /// `application/json`: 200 for every well-formed request.
    Json,
}

impl MediaType {
    pub fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }

    /// The status of a GraphQL request error (parse, validation, limits): 400 where the spec wants a 4xx,
    /// 200 under plain JSON.
    pub fn request_error_status(self) -> StatusCode {
        match self {
            MediaType::GraphqlResponse => StatusCode::BAD_REQUEST,
            MediaType::Json => StatusCode::OK,
        }
    }
}

/// A request-level error in the GraphQL response shape, in the negotiated media type.
pub fn request_error(status: StatusCode, code: Code, message: &str, media: MediaType) -> Response {
    let mut response = (status, graphql_error_body(code, message)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

/// 429 with `Retry-After` (whole seconds, rounded up) and the code `RATE_LIMITED`.
pub fn rate_limited(wait: Duration, media: MediaType) -> Response {
    let secs = wait.as_millis().div_ceil(1000).max(1) as u64;
    let mut response = request_error(
        StatusCode::TOO_MANY_REQUESTS,
        Code::RateLimited,
        &format!("Too many requests; retry in {secs} s."),
        media,
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The HTTP answer for an operation's outcome.
pub fn respond(headers: &HeaderMap, outcome: Outcome, media: MediaType) -> Response {
    let Outcome {
        entry,
        cacheable,
        status,
        cache,
        ..
    } = outcome;
    let not_modified = cacheable && if_none_match(headers, &entry.etag);
    let mut response = if not_modified {
        Response::new(Body::empty())
    } else {
        Response::new(Body::from(entry.body.clone()))
    };
    *response.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        match status {
            Status::Ok => StatusCode::OK,
            Status::RequestError => media.request_error_status(),
            Status::NotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Status::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Status::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            Status::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    };
    let h = response.headers_mut();
    if !not_modified {
        h.insert(header::CONTENT_TYPE, media.content_type());
    }
    let cache_control = if cacheable {
        let scope = if entry.public { "public" } else { "private" };
        format!("{scope}, max-age={}", entry.max_age)
    } else {
        "no-store".to_owned()
    };
    if let Ok(v) = HeaderValue::from_str(&cache_control) {
        h.insert(header::CACHE_CONTROL, v);
    }
    if let (true, Ok(v)) = (cacheable, HeaderValue::from_str(&entry.etag)) {
        h.insert(header::ETAG, v);
    }
    if cache == CacheStatus::Hit {
        h.insert(header::AGE, HeaderValue::from(entry.age()));
    }
    h.insert("x-cache", HeaderValue::from_static(cache.as_str()));
    // The answer depends on who asks and on the media type asked for: no shared or browser cache may reuse it
    // for another `Authorization` (a signed-out or switched user) or another `Accept`.
    h.insert(
        header::VARY,
        HeaderValue::from_static("authorization, accept"),
    );
    match status {
        Status::RateLimited { retry_after } => {
            h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        Status::NotAllowed => {
            h.insert(header::ALLOW, HeaderValue::from_static("POST"));
        }
        _ => {}
    }
    response
}

/// Whether `If-None-Match` names `etag` (or is `*`). Weak validators compare by their opaque part.
fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}
