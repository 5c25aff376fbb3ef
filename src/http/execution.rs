//! Running a GraphQL request behind the response cache, and writing the HTTP answer.
//!
//! - A query is looked up before anything is parsed; a hit is answered from the stored bytes (`X-Cache: HIT`).
//! - A miss executes once per key on this instance (single-flight), with a `Tracker` recording the tags it read
//!   and whether its answer depends on the caller; a cacheable result is stored (`MISS`).
//! - Mutations (and everything when the cache is off or unreachable) execute directly (`BYPASS`); the tags their
//!   committed writes affect are purged before the response is sent, so once a client has the answer no instance
//!   serves anything older.
//!
//! Every response carries `Cache-Control` (`public|private, max-age=N` when cacheable, otherwise `no-store`),
//! cacheable ones an `ETag` (a matching `If-None-Match` gets `304`), hits an `Age`.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response as HttpResponse;
use sha2::{Digest, Sha256};

use super::AppState;
use super::graphql::finish_errors;
use crate::auth::Viewer;
use crate::cache::{Entry, KeyBase, Lookup, Purges, Scope, Tracker, unix_now};
use crate::graphql::batch::Batched;
use crate::graphql::loaders::Loaders;

/// A computed response, shared by every request of one flight.
pub struct Computed {
    entry: Entry,
    cacheable: bool,
}

/// How the response was produced, for `X-Cache`.
#[derive(Clone, Copy)]
enum Source {
    Hit,
    Miss,
    Bypass,
}

impl Source {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Source::Hit => "HIT",
            Source::Miss => "MISS",
            Source::Bypass => "BYPASS",
        })
    }
}

/// Runs `request` as `viewer` and answers it.
pub async fn run(
    state: &AppState,
    headers: &HeaderMap,
    mut request: async_graphql::Request,
    viewer: Viewer,
    request_id: String,
) -> HttpResponse {
    let cache = &state.cache;
    if !cache.enabled() {
        return uncached(state, headers, request, viewer, &request_id).await;
    }
    let variables = serde_json::to_vec(&request.variables).unwrap_or_default();
    let base = KeyBase::new(&request.query, request.operation_name.as_deref(), &variables);
    let scope = match &viewer {
        Viewer::Anonymous => Scope::Anonymous,
        Viewer::User { id, .. } => Scope::User(*id),
    };
    let bypass = match cache.lookup(&base, &scope).await {
        Lookup::Hit(entry) => return respond(headers, &entry, true, Source::Hit),
        Lookup::Miss => false,
        Lookup::Bypass => true,
    };
    if !is_query(&mut request) {
        return uncached(state, headers, request, viewer, &request_id).await;
    }
    let flight_key = base.key(&scope);
    let work = compute(state.clone(), request, viewer, base, scope, request_id);
    match state.flights.run(flight_key, work).await {
        (Some(computed), _) => {
            let source = if bypass {
                cache.metrics().bypass.inc();
                Source::Bypass
            } else {
                Source::Miss
            };
            respond(headers, &computed.entry, computed.cacheable, source)
        }
        (None, _) => internal_error(),
    }
}

/// Whether the operation to run is a query (parsing it now; execution reuses the parsed document). A document
/// that does not parse is "not a query": it executes uncached and reports its own error.
fn is_query(request: &mut async_graphql::Request) -> bool {
    let name = request.operation_name.clone();
    let Ok(doc) = request.parsed_query() else {
        return false;
    };
    let mut operations = doc.operations.iter();
    let op = match name.as_deref() {
        Some(name) => operations.find(|(n, _)| n.is_some_and(|n| n.as_str() == name)),
        None => operations.next(),
    };
    op.is_some_and(|(_, op)| op.node.ty == OperationType::Query)
}

/// Executes a query on a miss, and stores the result if it may be cached.
async fn compute(
    state: AppState,
    request: async_graphql::Request,
    viewer: Viewer,
    base: KeyBase,
    scope: Scope,
    request_id: String,
) -> Arc<Computed> {
    let tracker = Arc::new(Tracker::default());
    // Before anything is read: purges from now on make this result unstorable.
    let snapshot = state.cache.begin().await;
    let (loaders, dispatcher) = Loaders::new(state.store.clone());
    let request = request
        .data(viewer)
        .data(loaders)
        .data(Arc::clone(&tracker));
    let mut response = Batched::new(dispatcher, state.schema.execute(request)).await;
    finish_errors(&mut response, &request_id);
    let max_age = state.cache.lifetime(response.cache_control.max_age);
    let cacheable = response.errors.is_empty() && max_age > 0;
    let public = response.cache_control.public && !tracker.viewer_dependent();
    let entry = entry_for(&response, max_age, public);
    if cacheable {
        if let Some(snapshot) = snapshot {
            let key = base.key(if public { &Scope::Public } else { &scope });
            state
                .cache
                .store(key, entry.clone(), tracker.take_tags(), snapshot)
                .await;
        }
    }
    Arc::new(Computed { entry, cacheable })
}

/// Executes without the cache (mutations, cache off, unparsable documents), purging what committed writes
/// affected before answering.
async fn uncached(
    state: &AppState,
    headers: &HeaderMap,
    request: async_graphql::Request,
    viewer: Viewer,
    request_id: &str,
) -> HttpResponse {
    let purges = Arc::new(Purges::default());
    let (loaders, dispatcher) = Loaders::new(state.store.clone());
    let request = request
        .data(viewer)
        .data(loaders)
        .data(Arc::clone(&purges));
    let mut response = Batched::new(dispatcher, state.schema.execute(request)).await;
    finish_errors(&mut response, request_id);
    let tags = purges.take();
    if !tags.is_empty() {
        // A failed purge is logged, counted and retried by the cache; the write itself has succeeded.
        let _ = state.cache.purge(&tags).await;
    }
    state.cache.metrics().bypass.inc();
    let entry = entry_for(&response, 0, false);
    respond(headers, &entry, false, Source::Bypass)
}

fn entry_for(response: &async_graphql::Response, max_age: u32, public: bool) -> Entry {
    let body = match serde_json::to_vec(response) {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "serialising a response failed");
            br#"{"errors":[{"message":"Internal server error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#
                .to_vec()
        }
    };
    let digest = Sha256::digest(&body);
    Entry {
        etag: format!("\"{}\"", hex::encode(&digest[..16])),
        body: body.into(),
        max_age,
        public,
        stored_at: unix_now(),
    }
}

/// The HTTP answer for `entry`.
fn respond(headers: &HeaderMap, entry: &Entry, cacheable: bool, source: Source) -> HttpResponse {
    let not_modified = cacheable && if_none_match(headers, &entry.etag);
    let mut response = if not_modified {
        HttpResponse::new(Body::empty())
    } else {
        HttpResponse::new(Body::from(entry.body.clone()))
    };
    if not_modified {
        *response.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = response.headers_mut();
    if !not_modified {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/graphql-response+json"),
        );
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
    if cacheable {
        if let Ok(v) = HeaderValue::from_str(&entry.etag) {
            h.insert(header::ETAG, v);
        }
    }
    if matches!(source, Source::Hit) {
        h.insert(header::AGE, HeaderValue::from(entry.age()));
    }
    h.insert("x-cache", source.header());
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

fn internal_error() -> HttpResponse {
    let body = br#"{"errors":[{"message":"Internal server error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#;
    let mut response = HttpResponse::new(Body::from(&body[..]));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/graphql-response+json"),
    );
    response
}
