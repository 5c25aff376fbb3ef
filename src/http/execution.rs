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

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response as HttpResponse;
use sha2::{Digest, Sha256};

use super::AppState;
use super::documents::{Kept, Parsed};
use super::graphql::{finish_errors, request_error};
use super::limits;
use crate::auth::Viewer;
use crate::cache::{Entry, KeyBase, Lookup, Purges, Scope, Tracker, unix_now};
use crate::graphql::batch::Batched;
use crate::graphql::compiled;
use crate::graphql::loaders::Loaders;

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

/// What the HTTP layer knows about a GraphQL request besides its body.
pub struct HttpContext {
    pub method: Method,
    pub media: MediaType,
    /// The client's address (see `FOLIO_TRUSTED_PROXIES`).
    pub client: IpAddr,
    pub request_id: String,
}

/// A computed response, shared by every request of one flight.
pub struct Computed {
    entry: Entry,
    cacheable: bool,
    /// The execution failed before producing data (parse or validation error): a request error.
    request_error: bool,
    timed_out: bool,
    /// A resolver refused with `RATE_LIMITED` (`login`): answer 429 with this `Retry-After`.
    retry_after: Option<u64>,
    /// Up to when in purge order this result is known fresh; `None`: not known (do not share it).
    valid: Option<crate::cache::Snapshot>,
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
    request: async_graphql::Request,
    viewer: Viewer,
    http: HttpContext,
) -> HttpResponse {
    // A recent document has passed the limits, and its key hash is known: a repeated query (a cache hit above
    // all) neither scans nor normalises its text again.
    let known = state.documents.get(&request.query);
    if known.is_none()
        && let Err(e) = limits::check_text(&request.query, &state.edge)
    {
        return request_error(
            http.media.request_error_status(),
            e.code,
            &e.message,
            http.media,
        );
    }
    let cache = &state.cache;
    let scope = match &viewer {
        Viewer::Anonymous => Scope::Anonymous,
        Viewer::User { id, .. } => Scope::User(*id),
    };
    // With the cache off there is nothing to hash or look up.
    let (base, bypass) = if cache.enabled() {
        let variables = serde_json::to_vec(&request.variables).unwrap_or_default();
        let operation = request.operation_name.as_deref();
        let base = match &known {
            Some(kept) => KeyBase::of(kept.hash(), operation, &variables),
            None => KeyBase::new(&request.query, operation, &variables),
        };
        match cache.lookup(&base, &scope).await {
            Lookup::Hit(entry) => {
                return respond(headers, &entry, Outcome::cached(), Source::Hit, http.media);
            }
            Lookup::Miss => (Some(base), false),
            Lookup::Bypass => (Some(base), true),
        }
    } else {
        (None, true)
    };
    // Parsed once here (or found among recent documents); execution reuses the parsed document.
    let operation_name = request.operation_name.clone();
    let mut parse_failed = false;
    let mut kept = None;
    let parsed = match known {
        Some(kept) => Ok(Parsed::Kept(kept)),
        None => state.documents.parse(&request.query),
    };
    let kind = match parsed {
        Ok(parsed) => {
            let checked =
                limits::check_document(parsed.document(), operation_name.as_deref(), &state.edge);
            let kind = match checked {
                Ok(kind) => kind,
                Err(e) => {
                    return request_error(
                        http.media.request_error_status(),
                        e.code,
                        &e.message,
                        http.media,
                    );
                }
            };
            // The executor gets its copy in `execute`, if it runs.
            kept = Some(match parsed {
                Parsed::Kept(kept) => kept,
                Parsed::Fresh(doc) => state.documents.keep(&request.query, doc),
            });
            kind
        }
        // Execution reports the error in the usual shape. Only a syntax error is a parse failure; the parser
        // also refuses documents it cannot pick an operation from (several anonymous ones, duplicates), which
        // are validation failures.
        Err(err) => {
            parse_failed = matches!(
                err,
                async_graphql::parser::Error::Syntax { .. }
                    | async_graphql::parser::Error::RecursionLimitExceeded
            );
            None
        }
    };
    if kind != Some(OperationType::Query) {
        if http.method == Method::GET && kind.is_some() {
            let mut response = request_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "METHOD_NOT_ALLOWED",
                "Mutations and subscriptions are only accepted over POST.",
                http.media,
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            return response;
        }
        return uncached(state, headers, request, viewer, &http, parse_failed, kept).await;
    }
    let Some(base) = base else {
        return uncached(state, headers, request, viewer, &http, parse_failed, kept).await;
    };
    // Where this request stands in purge order, before anything is read: purges from now on make its result
    // unstorable, and a shared result must be at least this fresh.
    let arrival = if bypass { None } else { cache.begin().await };
    let Some(arrival) = arrival else {
        // Without the cache's view of purges, a running execution cannot be shown to be fresh enough to
        // share: execute alone.
        cache.metrics().bypass.inc();
        let computed = compute(
            state.clone(),
            Operation { request, kept },
            viewer,
            base,
            scope,
            None,
            http.request_id,
        )
        .await;
        return respond(
            headers,
            &computed.entry,
            Outcome::of(&computed),
            Source::Bypass,
            http.media,
        );
    };
    cache.metrics().misses.inc();
    let flight_key = base.key(&scope);
    // Kept in case a shared result turns out too old for this request (rare): it then executes on its own.
    let mut again =
        async_graphql::Request::new(request.query.clone()).variables(request.variables.clone());
    again.operation_name = request.operation_name.clone();
    again.extensions = request.extensions.clone();
    let work = compute(
        state.clone(),
        Operation {
            request,
            kept: kept.clone(),
        },
        viewer.clone(),
        base.clone(),
        scope.clone(),
        Some(arrival.clone()),
        http.request_id.clone(),
    );
    let computed = match state.flights.run(flight_key, work).await {
        (Some(computed), true) => computed,
        // Another request's execution: usable only if it is known fresh as of this request's arrival (it may
        // have started before a mutation that returned before this request came in).
        (Some(computed), false) if computed.valid.as_ref().is_some_and(|v| v.covers(&arrival)) => {
            computed
        }
        (Some(_), false) => {
            compute(
                state.clone(),
                Operation {
                    request: again,
                    kept,
                },
                viewer,
                base,
                scope,
                Some(arrival),
                http.request_id,
            )
            .await
        }
        (None, _) => return internal_error(http.media),
    };
    respond(
        headers,
        &computed.entry,
        Outcome::of(&computed),
        Source::Miss,
        http.media,
    )
}

/// A GraphQL request and, if it parsed, its kept document (see `documents.rs`).
struct Operation {
    request: async_graphql::Request,
    kept: Option<Arc<Kept>>,
}

/// What an execution produced: the executor's response, or a compiled operation's bytes.
enum Executed {
    Graphql(async_graphql::Response),
    Compiled(compiled::Output, async_graphql::CacheControl),
}

impl Executed {
    fn cache_control(&self) -> async_graphql::CacheControl {
        match self {
            Executed::Graphql(r) => r.cache_control,
            Executed::Compiled(_, c) => *c,
        }
    }

    fn has_errors(&self) -> bool {
        match self {
            Executed::Graphql(r) => !r.errors.is_empty(),
            Executed::Compiled(..) => false,
        }
    }

    fn request_error(&self) -> bool {
        match self {
            Executed::Graphql(r) => is_request_error(r),
            Executed::Compiled(..) => false,
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Executed::Graphql(r) => retry_after(r),
            Executed::Compiled(..) => None,
        }
    }

    /// The serialised response (see `entry_for`).
    fn entry(self, max_age: u32, public: bool, cacheable: bool) -> Entry {
        match self {
            Executed::Graphql(r) => {
                let request_error = is_request_error(&r);
                entry_for(&r, max_age, public, request_error, cacheable)
            }
            Executed::Compiled(out, _) => entry_of(out.body, max_age, public, cacheable),
        }
    }
}

/// Executes inside the execution timeout: through the document's compiled plan when it has one that takes
/// this request (`graphql/compiled`), otherwise on the executor with the request's loaders. `None` when it ran
/// out of time: the execution future is dropped, which cancels its statements and returns their connections
/// to the pool. `tracker` is the cache's (on a miss), which a compiled run records its tags in.
async fn execute(
    state: &AppState,
    request: async_graphql::Request,
    request_id: &str,
    parse_failed: bool,
    kept: Option<&Kept>,
    tracker: Option<&Tracker>,
) -> Option<Executed> {
    let deadline = tokio::time::Instant::now() + state.edge.request_timeout;
    let operation = request.operation_name.clone();
    if let Some(plan) = kept.and_then(|k| k.plan(operation.as_deref())) {
        let run = plan.run(
            &state.store,
            &request.variables,
            state.max_complexity,
            tracker,
        );
        match tokio::time::timeout_at(deadline, run).await {
            Ok(Some(output)) => {
                state.metrics.compiled.inc();
                return Some(Executed::Compiled(output, plan.cache_control()));
            }
            // Not for this request's values: the executor answers it.
            Ok(None) => {}
            Err(_) => {
                timeout_warning(state);
                return None;
            }
        }
    }
    let mut request = request;
    if let Some(kept) = kept {
        request.set_parsed_query(kept.document());
    }
    let (loaders, dispatcher) = Loaders::new(state.store.clone());
    let request = request.data(loaders);
    let run = Batched::new(dispatcher, state.schema.execute(request));
    match tokio::time::timeout_at(deadline, run).await {
        Ok(mut response) => {
            finish_errors(&mut response, request_id, parse_failed);
            if let (true, Some(kept)) = (response.errors.is_empty(), kept) {
                kept.executed(operation.as_deref(), response.cache_control);
            }
            Some(Executed::Graphql(response))
        }
        Err(_) => {
            timeout_warning(state);
            None
        }
    }
}

fn timeout_warning(state: &AppState) {
    tracing::warn!(
        timeout_ms = state.edge.request_timeout.as_millis() as u64,
        "GraphQL execution timed out and was stopped"
    );
}

/// Executes a query on a miss, and stores the result if it may be cached. `snapshot` is where the request
/// stood in purge order before anything was read (`None`: the cache cannot tell; nothing is stored).
async fn compute(
    state: AppState,
    Operation { request, kept }: Operation,
    viewer: Viewer,
    base: KeyBase,
    scope: Scope,
    snapshot: Option<crate::cache::Snapshot>,
    request_id: String,
) -> Arc<Computed> {
    // A request that missed just as another flight for the same key finished finds its entry now: stored
    // entries are fresh (a purge deletes them), so serve it rather than execute again.
    if snapshot.is_some()
        && let Lookup::Hit(entry) = state.cache.peek(&base, &scope).await
    {
        return Arc::new(Computed {
            entry,
            cacheable: true,
            request_error: false,
            timed_out: false,
            retry_after: None,
            valid: snapshot,
        });
    }
    let tracker = Arc::new(Tracker::default());
    let request = request.data(viewer).data(Arc::clone(&tracker));
    let executed = execute(
        &state,
        request,
        &request_id,
        false,
        kept.as_deref(),
        Some(&tracker),
    );
    let Some(response) = executed.await else {
        return Arc::new(timed_out(&state));
    };
    let cache_control = response.cache_control();
    let max_age = state.cache.lifetime(cache_control.max_age);
    let cacheable = !response.has_errors() && max_age > 0;
    let public = cache_control.public && !tracker.viewer_dependent();
    let request_error = response.request_error();
    let entry = response.entry(max_age, public, cacheable);
    // Not stored (errors): fresh as of the start, like any execution.
    let mut valid = snapshot.clone();
    if let (true, Some(snapshot)) = (cacheable, snapshot) {
        let mut tags = tracker.take_tags();
        let key = if public {
            base.key(&Scope::Public)
        } else {
            // A private answer also depends on who the caller is (their role decides what they may read), so
            // a change to the caller's account, such as a promotion or demotion, must drop it too.
            if let Scope::User(id) = scope {
                tags.push(crate::cache::tags::user(id));
            }
            base.key(&scope)
        };
        // Stored: checked fresh up to the store. Refused: a tag it read was purged while it ran.
        valid = state.cache.store(key, entry.clone(), tags, snapshot).await;
    }
    Arc::new(Computed {
        entry,
        cacheable,
        request_error,
        timed_out: false,
        retry_after: None,
        valid,
    })
}

/// Executes without the cache (mutations, cache off, unparsable documents), purging what committed writes
/// affected before answering.
async fn uncached(
    state: &AppState,
    headers: &HeaderMap,
    request: async_graphql::Request,
    viewer: Viewer,
    http: &HttpContext,
    parse_failed: bool,
    kept: Option<Arc<Kept>>,
) -> HttpResponse {
    let purges = Arc::new(Purges::default());
    let request = request
        .data(viewer)
        .data(ClientAddr(http.client))
        .data(Arc::clone(&purges));
    let response = execute(
        state,
        request,
        &http.request_id,
        parse_failed,
        kept.as_deref(),
        None,
    )
    .await;
    // Purged even after a timeout: a mutation may have committed before the clock ran out.
    let tags = purges.take();
    if !tags.is_empty() {
        // A failed purge is logged, counted and retried by the cache; the write itself has succeeded.
        let _ = state.cache.purge(&tags).await;
    }
    state.cache.metrics().bypass.inc();
    let computed = match response {
        Some(response) => Computed {
            request_error: response.request_error(),
            retry_after: response.retry_after(),
            entry: response.entry(0, false, false),
            cacheable: false,
            timed_out: false,
            valid: None,
        },
        None => timed_out(state),
    };
    if computed.retry_after.is_some() {
        state.metrics.rate_limited.inc();
    }
    respond(
        headers,
        &computed.entry,
        Outcome::of(&computed),
        Source::Bypass,
        http.media,
    )
}

/// The client's address as the connection sees it, for per-address limits inside resolvers (`login`).
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub IpAddr);

fn timed_out(state: &AppState) -> Computed {
    let message = format!(
        "The request took longer than {} ms and was stopped (FOLIO_REQUEST_TIMEOUT_MS).",
        state.edge.request_timeout.as_millis()
    );
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": "TIMEOUT" } }] });
    Computed {
        entry: Entry {
            body: body.to_string().into_bytes().into(),
            etag: String::new(),
            max_age: 0,
            public: false,
            stored_at: unix_now(),
        },
        cacheable: false,
        request_error: false,
        timed_out: true,
        retry_after: None,
        valid: None,
    }
}

/// The `retryAfter` of a `RATE_LIMITED` error in the response, if any.
fn retry_after(response: &async_graphql::Response) -> Option<u64> {
    response.errors.iter().find_map(|e| {
        let ext = e.extensions.as_ref()?;
        match (ext.get("code"), ext.get("retryAfter")) {
            (Some(async_graphql::Value::String(code)), Some(async_graphql::Value::Number(n)))
                if code == "RATE_LIMITED" =>
            {
                n.as_u64()
            }
            _ => None,
        }
    })
}

/// A request error: no data, and errors that are about the request rather than a field (parse, validation).
fn is_request_error(response: &async_graphql::Response) -> bool {
    matches!(response.data, async_graphql::Value::Null)
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

/// How to answer a computed response.
struct Outcome {
    cacheable: bool,
    request_error: bool,
    timed_out: bool,
    retry_after: Option<u64>,
}

impl Outcome {
    fn cached() -> Self {
        Self {
            cacheable: true,
            request_error: false,
            timed_out: false,
            retry_after: None,
        }
    }

    fn of(c: &Computed) -> Self {
        Self {
            cacheable: c.cacheable,
            request_error: c.request_error,
            timed_out: c.timed_out,
            retry_after: c.retry_after,
        }
    }
}

/// The serialised response. Only a cacheable one gets an `ETag` (a digest of the body): the others are never
/// validated, so hashing them would be work for nothing on every mutation and uncached request.
fn entry_for(
    response: &async_graphql::Response,
    max_age: u32,
    public: bool,
    request_error: bool,
    cacheable: bool,
) -> Entry {
    let body = if request_error {
        // The spec: a request error's response has no `data` entry at all.
        serde_json::to_vec(&serde_json::json!({ "errors": response.errors }))
    } else {
        serde_json::to_vec(response)
    };
    let body = match body {
        Ok(body) => body,
        Err(err) => {
            tracing::error!(error = %err, "serialising a response failed");
            br#"{"errors":[{"message":"Internal server error","extensions":{"code":"INTERNAL_SERVER_ERROR"}}]}"#
                .to_vec()
        }
    };
    entry_of(body, max_age, public, cacheable)
}

/// The entry for a serialised response body.
fn entry_of(body: Vec<u8>, max_age: u32, public: bool, cacheable: bool) -> Entry {
    let etag = if cacheable {
        format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]))
    } else {
        String::new()
    };
    Entry {
        etag,
        body: body.into(),
        max_age,
        public,
        stored_at: unix_now(),
    }
}

/// The HTTP answer for `entry`.
fn respond(
    headers: &HeaderMap,
    entry: &Entry,
    outcome: Outcome,
    source: Source,
    media: MediaType,
) -> HttpResponse {
    let cacheable = outcome.cacheable;
    let not_modified = cacheable && if_none_match(headers, &entry.etag);
    let mut response = if not_modified {
        HttpResponse::new(Body::empty())
    } else {
        HttpResponse::new(Body::from(entry.body.clone()))
    };
    *response.status_mut() = if not_modified {
        StatusCode::NOT_MODIFIED
    } else if outcome.timed_out {
        StatusCode::GATEWAY_TIMEOUT
    } else if outcome.retry_after.is_some() {
        StatusCode::TOO_MANY_REQUESTS
    } else if outcome.request_error {
        media.request_error_status()
    } else {
        StatusCode::OK
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
    if matches!(source, Source::Hit) {
        h.insert(header::AGE, HeaderValue::from(entry.age()));
    }
    h.insert("x-cache", source.header());
    // The answer depends on who asks and on the media type asked for: no shared or browser cache may reuse it
    // for another `Authorization` (a signed-out or switched user) or another `Accept`.
    h.insert(
        header::VARY,
        HeaderValue::from_static("authorization, accept"),
    );
    if let Some(secs) = outcome.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
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

fn internal_error(media: MediaType) -> HttpResponse {
    request_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL_SERVER_ERROR",
        "Internal server error",
        media,
    )
}
