//! Live transports at `/graphql`: WebSocket (`graphql-transport-ws`, the protocol of the `graphql-ws` client)
//! and server-sent events (`graphql-sse`, distinct connections mode). Both hand every operation to
//! `Pipeline::open`, so queries and mutations sent this way run exactly as over HTTP, and subscriptions and
//! `@live` queries stream.
//!
//! WebSocket rules (close codes are the protocol's):
//! - `connection_init` within `FOLIO_WS_INIT_TIMEOUT_MS`, else 4408; a second one 4429. Its payload may carry
//!   `Authorization` (or `authorization`, or `token`): a credential that does not verify closes with 4403. The
//!   connection is closed with 4403 when its token expires.
//! - `subscribe` before `connection_ack`: 4401; an id already running: 4409; a malformed message: 4400.
//! - `ping` gets `pong`; the server pings an idle connection itself every `KEEPALIVE`.
//! - Past `FOLIO_WS_MAX_SUBSCRIPTIONS` operations on one connection, a subscribe gets an `error` message with
//!   `TOO_MANY_SUBSCRIPTIONS` (the connection stays). Rate limits apply to each subscribe as to a request.
//! - Messages to the client wait in a queue of `FOLIO_LIVE_QUEUE`; a client that lets it fill is closed with
//!   4500 and counted (`folio_live_slow_consumers_total`): one slow reader never grows the server's memory.
//! - Shutdown closes every connection with 1001 and ends every event stream.
//!
//! Written on axum's WebSocket rather than async-graphql-axum's protocol handler: these rules (the pipeline for
//! every message, the bounded queue, token expiry, per-connection limits) sit between the protocol and the
//! executor, where that handler leaves no room.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response as HttpResponse};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value as Json;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::response::{MediaType, rate_limited, request_error, respond};
use super::state::AppState;
use crate::auth::Viewer;
use crate::error::Code;
use crate::live::registry::Next;
use crate::operation::{Accepts, Opened, Outcome, Request, Status};

/// The subprotocol of the `graphql-ws` client.
pub const SUBPROTOCOL: &str = "graphql-transport-ws";

/// How often the server pings an acknowledged connection.
const KEEPALIVE: Duration = Duration::from_secs(20);

/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// `GET /graphql` with `Upgrade: websocket`.
pub fn upgrade(
    state: AppState,
    ws: WebSocketUpgrade,
    client: IpAddr,
    request_id: String,
) -> HttpResponse {
    let max = state.edge.max_body_bytes;
    ws.protocols([SUBPROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| Connection::serve(state, socket, client, request_id))
}

/// Why and how a connection ends: the first reason set wins.
#[derive(Clone)]
struct Closer(watch::Sender<Option<(u16, String)>>);

impl Closer {
    fn close(&self, code: u16, reason: &str) {
        self.0.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some((code, reason.to_owned()));
            true
        });
    }
}

/// Where operations put their messages: the bounded queue in front of the socket.
#[derive(Clone)]
struct Outbox {
    queue: mpsc::Sender<String>,
    closer: Closer,
    state: AppState,
}

impl Outbox {
    /// Queues `text`; false when the connection is over (closed, or just now for falling behind).
    fn send(&self, text: String) -> bool {
        match self.queue.try_send(text) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.state.metrics.live.slow_consumers.inc();
                self.closer.close(
                    4500,
                    "Slow consumer: too many messages waiting to be sent (FOLIO_LIVE_QUEUE)",
                );
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn next(&self, id: &str, body: &[u8]) -> bool {
        self.send(format!(
            r#"{{"id":{},"type":"next","payload":{}}}"#,
            Json::from(id),
            String::from_utf8_lossy(body)
        ))
    }

    fn complete(&self, id: &str) -> bool {
        self.send(format!(r#"{{"id":{},"type":"complete"}}"#, Json::from(id)))
    }

    /// An `error` message: the operation was refused before it ran (its `errors`).
    fn error(&self, id: &str, body: &[u8]) -> bool {
        let errors = serde_json::from_slice::<Json>(body)
            .ok()
            .and_then(|mut v| v.get_mut("errors").map(Json::take))
            .unwrap_or_else(|| Json::Array(Vec::new()));
        self.send(serde_json::json!({ "id": id, "type": "error", "payload": errors }).to_string())
    }
}

/// A message from the client.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    ConnectionInit {
        #[serde(default)]
        payload: Option<Json>,
    },
    Ping {
        #[serde(default)]
        payload: Option<Json>,
    },
    Pong {
        #[serde(default)]
        #[allow(dead_code)]
        payload: Option<Json>,
    },
    Subscribe {
        id: String,
        payload: SubscribePayload,
    },
    Complete {
        id: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscribePayload {
    #[serde(default)]
    query: Option<String>,
    #[serde(default)]
    document_id: Option<String>,
    #[serde(default)]
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Json>,
    #[serde(default)]
    extensions: Option<Json>,
}

struct Connection {
    state: AppState,
    outbox: Outbox,
    client: IpAddr,
    request_id: String,
    /// `connection_init` received / acknowledged.
    initialised: bool,
    acked: bool,
    viewer: Viewer,
    operations: Operations,
    serial: u64,
    /// When the token expires (Unix seconds).
    expires: Option<u64>,
}

impl Connection {
    async fn serve(state: AppState, socket: WebSocket, client: IpAddr, request_id: String) {
        let live = state.metrics.live.clone();
        live.connections.inc();
        let (mut sink, mut incoming) = socket.split();
        let (queue, mut outgoing) = mpsc::channel::<String>(state.live.queue);
        let (close_tx, mut close_rx) = watch::channel(None);
        let closer = Closer(close_tx);
        let mut writer_close = close_rx.clone();
        let writer = tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = writer_close.changed() => break,
                    text = outgoing.recv() => match text {
                        Some(text) => {
                            if sink.send(Message::Text(text.into())).await.is_err() {
                                return;
                            }
                        }
                        None => break,
                    },
                }
            }
            let close = writer_close.borrow().clone();
            let frame = close.map(|(code, reason)| CloseFrame {
                code,
                reason: Utf8Bytes::from(reason),
            });
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.send(Message::Close(frame))).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, sink.close()).await;
        });
        let mut conn = Connection {
            outbox: Outbox {
                queue,
                closer: closer.clone(),
                state: state.clone(),
            },
            state: state.clone(),
            client,
            request_id,
            initialised: false,
            acked: false,
            viewer: Viewer::Anonymous,
            operations: Operations::default(),
            serial: 0,
            expires: None,
        };
        let init_timeout = tokio::time::sleep(state.live.ws_init_timeout);
        tokio::pin!(init_timeout);
        let expiry = tokio::time::sleep(Duration::from_secs(u32::MAX.into()));
        tokio::pin!(expiry);
        let mut shutdown = state.shutdown.clone();
        let mut keepalive =
            tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
        loop {
            tokio::select! {
                _ = close_rx.changed() => break,
                _ = &mut init_timeout, if !conn.initialised => {
                    closer.close(4408, "Connection initialisation timeout");
                }
                _ = &mut expiry, if conn.expires.is_some() => {
                    closer.close(4403, "Forbidden: the token has expired");
                }
                _ = shutdown.changed() => {
                    closer.close(1001, "Server shutting down");
                }
                _ = keepalive.tick(), if conn.acked => {
                    conn.outbox.send(r#"{"type":"ping"}"#.to_owned());
                }
                message = incoming.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(at) = conn.handle(text.as_str()).await {
                            let left = at.saturating_sub(crate::cache::unix_now());
                            expiry.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(left));
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        closer.close(4400, "Binary messages are not supported");
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        closer.close(1000, "");
                        break;
                    }
                },
            }
        }
        conn.operations.abort_all();
        drop(conn);
        let _ = writer.await;
        live.connections.dec();
    }

    /// Handles one client message; returns the token's expiry when an acknowledged init set one.
    async fn handle(&mut self, text: &str) -> Option<u64> {
        let message = match serde_json::from_str::<ClientMessage>(text) {
            Ok(message) => message,
            Err(err) => {
                let reason = format!("Invalid message received: {err}");
                self.outbox.closer.close(4400, truncate(&reason));
                return None;
            }
        };
        match message {
            ClientMessage::ConnectionInit { payload } => return self.init(payload).await,
            ClientMessage::Ping { payload } => {
                let pong = match payload {
                    Some(payload) => serde_json::json!({ "type": "pong", "payload": payload }),
                    None => serde_json::json!({ "type": "pong" }),
                };
                self.outbox.send(pong.to_string());
            }
            ClientMessage::Pong { .. } => {}
            ClientMessage::Subscribe { id, payload } => self.subscribe(id, payload).await,
            ClientMessage::Complete { id } => {
                self.operations.abort(&id);
            }
        }
        None
    }

    async fn init(&mut self, payload: Option<Json>) -> Option<u64> {
        if self.initialised {
            self.outbox
                .closer
                .close(4429, "Too many initialisation requests");
            return None;
        }
        self.initialised = true;
        let credential = payload.as_ref().and_then(credential);
        let session = self
            .state
            .auth
            .session(credential.as_deref().map(str::as_bytes))
            .await;
        match session {
            Ok((viewer, expires)) => {
                self.viewer = viewer;
                self.expires = expires;
                self.acked = true;
                self.outbox.send(r#"{"type":"connection_ack"}"#.to_owned());
                expires
            }
            Err(err) if err.status() == StatusCode::UNAUTHORIZED => {
                tracing::info!(reason = %err.public_message(), "WebSocket credential rejected");
                self.outbox.closer.close(4403, "Forbidden");
                None
            }
            Err(err) => {
                tracing::error!(error = ?err, "authenticating a WebSocket failed");
                self.outbox.closer.close(4500, "Internal error");
                None
            }
        }
    }

    async fn subscribe(&mut self, id: String, payload: SubscribePayload) {
        if !self.acked {
            self.outbox.closer.close(4401, "Unauthorized");
            return;
        }
        if self.operations.running(&id) {
            self.outbox.closer.close(
                4409,
                truncate(&format!("Subscriber for {id} already exists")),
            );
            return;
        }
        let max = self.state.live.ws_max_subscriptions;
        if self.operations.len() >= max {
            let body = crate::error::graphql_error_body(
                Code::TooManySubscriptions,
                &format!(
                    "This connection runs {max} operations already (FOLIO_WS_MAX_SUBSCRIPTIONS); complete one first."
                ),
            );
            self.outbox.error(&id, &body);
            return;
        }
        if let Some(wait) = self.state.rate_check(&self.viewer, self.client).await {
            let secs = wait.as_millis().div_ceil(1000).max(1);
            let body = serde_json::json!({ "errors": [{
                "message": format!("Too many requests; retry in {secs} s."),
                "extensions": { "code": Code::RateLimited.as_str(), "retryAfter": secs },
            }]});
            self.outbox.error(&id, body.to_string().as_bytes());
            return;
        }
        // A WebSocket carries no gateway secret: the public rule applies.
        let reveals_sdl = self.state.edge.reveals_sdl(None);
        let request = match operation_request(
            payload,
            self.viewer.clone(),
            self.client,
            &self.request_id,
            reveals_sdl,
        ) {
            Ok(request) => request,
            Err(message) => {
                let body = crate::error::graphql_error_body(Code::BadRequest, &message);
                self.outbox.error(&id, &body);
                return;
            }
        };
        self.serial += 1;
        let serial = self.serial;
        let outbox = self.outbox.clone();
        let operations = self.operations.clone();
        let op_id = id.clone();
        // Registered under the lock the task's release takes, so even an instant operation is registered first.
        let mut running = self.operations.lock();
        let task = tokio::spawn(async move {
            let release = || operations.release(&op_id, serial);
            run_operation(&outbox, &op_id, request, release).await;
        });
        running.insert(id, (serial, task.abort_handle()));
    }
}

/// A connection's running operations by id, with the serial number that tells a reused id apart. Shared with
/// the operations themselves: each releases its id *before* sending its last message, so a client may reuse the
/// id as soon as it sees `complete`.
#[derive(Clone, Default)]
struct Operations(Arc<Mutex<HashMap<String, (u64, AbortHandle)>>>);

impl Operations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, AbortHandle)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn running(&self, id: &str) -> bool {
        self.lock().contains_key(id)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn release(&self, id: &str, serial: u64) {
        let mut map = self.lock();
        if map.get(id).is_some_and(|(s, _)| *s == serial) {
            map.remove(id);
        }
    }

    fn abort(&self, id: &str) {
        if let Some((_, task)) = self.lock().remove(id) {
            task.abort();
        }
    }

    fn abort_all(&self) {
        for (_, (_, task)) in self.lock().drain() {
            task.abort();
        }
    }
}

/// Runs one operation of a WebSocket and sends its messages; `release` frees its id just before the last one.
async fn run_operation(outbox: &Outbox, id: &str, request: Request, release: impl Fn()) {
    let pipeline = outbox.state.pipeline.clone();
    // Boxed: opening takes a large future (resolution, a whole execution), which would otherwise stay part of
    // this task's state for as long as the subscription runs.
    let opened = Box::pin(pipeline.open(request)).await;
    match opened {
        Opened::Once(outcome) => {
            if refused(&outcome) {
                release();
                outbox.error(id, &outcome.entry.body);
            } else if outbox.next(id, &outcome.entry.body) {
                release();
                outbox.complete(id);
            }
        }
        Opened::Live(mut stream) => loop {
            match stream.next().await {
                Next::Emission(emission) => {
                    if emission.last {
                        release();
                    }
                    if !outbox.next(id, &emission.body) {
                        return;
                    }
                    outbox.state.metrics.live.events_sent.inc();
                    if emission.last {
                        outbox.complete(id);
                        return;
                    }
                }
                Next::Overflow => {
                    outbox.state.metrics.live.slow_consumers.inc();
                    outbox.closer.close(
                        4500,
                        "Slow consumer: fell too far behind a subscription's results",
                    );
                    return;
                }
                Next::End => {
                    release();
                    outbox.complete(id);
                    return;
                }
            }
        },
    }
    release();
}

/// An outcome that is a refusal before execution (the protocol's `error` message, or a 4xx over SSE).
fn refused(outcome: &Outcome) -> bool {
    matches!(outcome.status, Status::RequestError | Status::NotAllowed)
}

/// The credential in a `connection_init` payload, as an `Authorization` header value.
fn credential(payload: &Json) -> Option<String> {
    let text = ["Authorization", "authorization", "token"]
        .iter()
        .find_map(|key| payload.get(key).and_then(Json::as_str))?
        .trim();
    if text.is_empty() {
        return None;
    }
    let has_scheme = text
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"));
    Some(if has_scheme {
        text.to_owned()
    } else {
        format!("Bearer {text}")
    })
}

/// A close reason fits in 123 bytes.
fn truncate(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

fn operation_request(
    payload: SubscribePayload,
    viewer: Viewer,
    client: IpAddr,
    request_id: &str,
    reveals_sdl: bool,
) -> Result<Request, String> {
    let variables = match payload.variables {
        None | Some(Json::Null) => async_graphql::Variables::default(),
        Some(vars @ Json::Object(_)) => async_graphql::Variables::from_json(vars),
        Some(_) => return Err("`variables` must be an object.".to_owned()),
    };
    let extensions = match payload.extensions {
        None | Some(Json::Null) => async_graphql::Extensions::default(),
        Some(ext @ Json::Object(_)) => {
            serde_json::from_value(ext).map_err(|_| "`extensions` must be an object.".to_owned())?
        }
        Some(_) => return Err("`extensions` must be an object.".to_owned()),
    };
    if payload.query.is_none()
        && payload.document_id.is_none()
        && !extensions.contains_key("persistedQuery")
    {
        return Err("The payload has no `query`.".to_owned());
    }
    Ok(Request {
        document: payload.query,
        document_id: payload.document_id,
        operation_name: payload.operation_name.filter(|n| !n.is_empty()),
        variables,
        extensions,
        viewer,
        client,
        request_id: request_id.to_owned(),
        accepts: Accepts::Any,
        deadline: None,
        reveals_sdl,
    })
}

/// GraphQL over server-sent events (distinct connections): the operation's results as `next` events, then a
/// `complete` event. A refusal before execution answers like GraphQL over HTTP with
/// `application/graphql-response+json` (a 4xx with the errors), which the `graphql-sse` client reports.
pub async fn sse(state: AppState, request: Request) -> HttpResponse {
    let headers = axum::http::HeaderMap::new();
    let opened = state.pipeline.open(request).await;
    let (events, mut stream) = match opened {
        // Refused, rate-limited, timed out: answered as over HTTP, with a status the client reports.
        Opened::Once(outcome) if outcome.status != Status::Ok => {
            return respond(&headers, outcome, MediaType::GraphqlResponse);
        }
        Opened::Once(outcome) => (vec![outcome.entry.body], None),
        Opened::Live(stream) => (Vec::new(), Some(stream)),
    };
    let (queue, outgoing) = mpsc::channel::<SseEvent>(state.live.queue);
    let live = state.metrics.live.clone();
    let mut shutdown = state.shutdown.clone();
    live.connections.inc();
    tokio::spawn(async move {
        let next = |body: &[u8]| {
            SseEvent::default()
                .event("next")
                .data(String::from_utf8_lossy(body))
        };
        let overflow = |live: &crate::live::LiveMetrics| {
            live.slow_consumers.inc();
            tracing::info!("dropped a slow event-stream consumer");
        };
        for body in events {
            if queue.try_send(next(&body)).is_err() {
                overflow(&live);
                live.connections.dec();
                return;
            }
        }
        if let Some(stream) = stream.as_mut() {
            loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    _ = shutdown.changed() => break,
                    _ = queue.closed() => break,
                };
                match item {
                    Next::Emission(emission) => {
                        if queue.try_send(next(&emission.body)).is_err() {
                            overflow(&live);
                            live.connections.dec();
                            return;
                        }
                        live.events_sent.inc();
                        if emission.last {
                            break;
                        }
                    }
                    Next::Overflow => {
                        overflow(&live);
                        live.connections.dec();
                        return;
                    }
                    Next::End => break,
                }
            }
        }
        let _ = queue.try_send(SseEvent::default().event("complete").data(""));
        live.connections.dec();
    });
    let body = futures_util::stream::unfold(outgoing, |mut outgoing| async move {
        let event = outgoing.recv().await?;
        Some((Ok::<_, Infallible>(event), outgoing))
    });
    Sse::new(body)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `rate_limited` for a refused SSE request (used when the rate check fails before the pipeline).
pub fn sse_rate_limited(wait: Duration) -> HttpResponse {
    rate_limited(wait, MediaType::GraphqlResponse)
}

/// An SSE request whose body or query string is malformed.
pub fn sse_bad_request(message: &str) -> HttpResponse {
    request_error(
        StatusCode::BAD_REQUEST,
        Code::BadRequest,
        message,
        MediaType::GraphqlResponse,
    )
}
