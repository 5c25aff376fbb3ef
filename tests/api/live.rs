//! Live data over real WebSocket (graphql-transport-ws) and SSE connections: the protocol's rules and close
//! codes, each subscription field, live queries re-run on commit, authorization as of each event, limits, slow
//! consumers, shutdown. On SQLite the bus is in-process; with `FOLIO_TEST_REDIS_URL` two instances share Redis
//! pub/sub and the cross-instance tests run too.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{
    Fixture, RedisTarget, TestApp, TestDb, new_admin, spawn_instance, test_config, token_for,
    uses_redis,
};
use folio::config::{AuthConfig, Environment};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the server sent.
#[derive(Debug)]
enum Got {
    Message(Value),
    Closed(u16, String),
}

/// A graphql-transport-ws client, as small as the tests need.
struct Ws {
    socket: Socket,
}

const WAIT: Duration = Duration::from_secs(10);

impl Ws {
    async fn connect(app: &TestApp) -> Ws {
        let url = format!("{}/graphql", app.base.replacen("http://", "ws://", 1));
        let mut request = url.into_client_request().expect("ws request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        let (socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .expect("websocket connects");
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "graphql-transport-ws"
        );
        Ws { socket }
    }

    /// Connected and acknowledged, as `token`'s user (or anonymous).
    async fn ready(app: &TestApp, token: Option<&str>) -> Ws {
        let mut ws = Ws::connect(app).await;
        ws.init(token).await;
        ws
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Message::Text(message.to_string().into()))
            .await
            .expect("send");
    }

    async fn init(&mut self, token: Option<&str>) {
        let payload = match token {
            Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
            None => json!({}),
        };
        self.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        match self.recv().await {
            Got::Message(m) if m["type"] == "connection_ack" => {}
            other => panic!("expected connection_ack, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "id": id,
            "type": "subscribe",
            "payload": { "query": query, "variables": variables },
        }))
        .await;
    }

    /// The next message or close, skipping the server's keep-alive pings.
    async fn recv(&mut self) -> Got {
        loop {
            let frame = tokio::time::timeout(WAIT, self.socket.next())
                .await
                .expect("the server answers in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    let value: Value = serde_json::from_str(&text).expect("JSON message");
                    if value["type"] == "ping" {
                        continue;
                    }
                    return Got::Message(value);
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Got::Closed(f.code.into(), f.reason.to_string()),
                        None => Got::Closed(1005, String::new()),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Got::Closed(1006, String::new()),
            }
        }
    }

    /// The next message, which must be one.
    async fn message(&mut self) -> Value {
        match self.recv().await {
            Got::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The payload of the next `next` message for `id`.
    async fn next(&mut self, id: &str) -> Value {
        let m = self.message().await;
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str()),
            (Some("next"), Some(id)),
            "{m}"
        );
        m["payload"].clone()
    }

    async fn complete(&mut self, id: &str) {
        let m = self.message().await;
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str()),
            (Some("complete"), Some(id)),
            "{m}"
        );
    }

    /// The code of the `error` message that refuses `id`.
    async fn refused(&mut self, id: &str) -> String {
        let m = self.message().await;
        assert_eq!(
            (m["type"].as_str(), m["id"].as_str()),
            (Some("error"), Some(id)),
            "{m}"
        );
        m["payload"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    async fn closed(&mut self) -> (u16, String) {
        match self.recv().await {
            Got::Closed(code, reason) => (code, reason),
            other => panic!("expected the connection to close, got {other:?}"),
        }
    }

    /// Nothing arrives within `ms` (pings aside).
    async fn silent(&mut self, ms: u64) {
        let got = tokio::time::timeout(Duration::from_millis(ms), self.recv()).await;
        assert!(got.is_err(), "expected silence, got {got:?}");
    }
}

async fn app_with(configure: impl FnOnce(&mut folio::Config)) -> TestApp {
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    configure(&mut config);
    TestApp::spawn_with(db, config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_and_mutations_over_websocket_answer_as_over_http() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let query = "query P($id: ID!) { post(id: $id) { __typename title author { name } } }";
    let vars = json!({ "id": fx.alice_posts[0].to_string() });
    let over_http = app.gql(query, vars.clone()).await;
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe("1", query, vars).await;
    assert_eq!(ws.next("1").await, over_http);
    ws.complete("1").await;

    // A mutation's guard answers with the same code as over HTTP.
    let mutation = "mutation { createPost(input: {title: \"T\", content: \"C\"}) { id } }";
    ws.subscribe("2", mutation, json!({})).await;
    let answer = ws.next("2").await;
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{answer}"
    );
    ws.complete("2").await;

    // A document that fails validation is refused with the protocol's `error` message.
    ws.subscribe("3", "{ nope }", json!({})).await;
    assert_eq!(ws.refused("3").await, "GRAPHQL_VALIDATION_FAILED");

    // The same limits: too many root fields.
    let wide: String = (0..25).map(|i| format!("a{i}: me {{ id }} ")).collect();
    ws.subscribe("4", &format!("{{ {wide} }}"), json!({})).await;
    let m = ws.message().await;
    assert_eq!(m["type"], "error", "{m}");
    assert_ne!(
        m["payload"][0]["extensions"]["code"],
        "INTERNAL_SERVER_ERROR"
    );

    // ping / pong.
    ws.send(json!({ "type": "ping", "payload": { "t": 1 } }))
        .await;
    assert_eq!(
        ws.message().await,
        json!({ "type": "pong", "payload": { "t": 1 } })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_the_protocols_codes() {
    let app = app_with(|c| c.live.ws_init_timeout = Duration::from_millis(300)).await;

    // No connection_init in time: 4408.
    let mut ws = Ws::connect(&app).await;
    assert_eq!(ws.closed().await.0, 4408);

    // A second connection_init: 4429.
    let mut ws = Ws::ready(&app, None).await;
    ws.send(json!({ "type": "connection_init" })).await;
    assert_eq!(ws.closed().await.0, 4429);

    // Subscribe before the acknowledgement: 4401.
    let mut ws = Ws::connect(&app).await;
    ws.subscribe("1", "{ posts { totalCount } }", json!({}))
        .await;
    assert_eq!(ws.closed().await.0, 4401);

    // A malformed message: 4400.
    let mut ws = Ws::ready(&app, None).await;
    ws.send(json!({ "type": "subscribe", "id": 5 })).await;
    assert_eq!(ws.closed().await.0, 4400);
    let mut ws = Ws::ready(&app, None).await;
    ws.socket
        .send(Message::Text("not json".into()))
        .await
        .expect("send");
    assert_eq!(ws.closed().await.0, 4400);

    // A bad token: 4403.
    let mut ws = Ws::connect(&app).await;
    ws.send(json!({ "type": "connection_init", "payload": { "Authorization": "Bearer nope" } }))
        .await;
    assert_eq!(ws.closed().await, (4403, "Forbidden".to_owned()));

    // A duplicate id while the first still runs: 4409.
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe("same", "subscription { postPublished { id } }", json!({}))
        .await;
    ws.subscribe("same", "subscription { postPublished { id } }", json!({}))
        .await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4409);
    assert!(reason.contains("same"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_accepted_under_every_key_and_expiry_closes_the_connection() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let token = token_for(fx.alice);
    for payload in [
        json!({ "Authorization": format!("Bearer {token}") }),
        json!({ "authorization": format!("Bearer {token}") }),
        json!({ "token": token }),
    ] {
        let mut ws = Ws::connect(&app).await;
        ws.send(json!({ "type": "connection_init", "payload": payload }))
            .await;
        assert_eq!(ws.message().await["type"], "connection_ack");
        ws.subscribe("me", "{ me { id } }", json!({})).await;
        assert_eq!(
            ws.next("me").await["data"]["me"]["id"],
            fx.alice.to_string()
        );
    }

    // A token that expires in two seconds: the connection is closed then, with 4403.
    let short = AuthConfig {
        jwt_secret: Some(crate::helpers::TEST_SECRET.into()),
        token_ttl: Duration::from_secs(2),
        ..AuthConfig::default()
    };
    let token = folio::auth::OwnTokens::new(&short, Environment::Development)
        .expect("issuer")
        .issue(fx.alice, folio::store::Role::User)
        .expect("token");
    let mut ws = Ws::ready(&app, Some(&token)).await;
    ws.subscribe("s", "subscription { postPublished { id } }", json!({}))
        .await;
    let started = std::time::Instant::now();
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403);
    assert!(reason.contains("expired"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

const PUBLISHED: &str = "subscription { postPublished { __typename id title author { name } } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_published_announces_published_posts_only() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let alice = token_for(fx.alice);
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe("p", PUBLISHED, json!({})).await;
    // The subscription is registered once the subscribe has been read; a query on the same socket after it
    // answers only after that.
    ws.subscribe("q", "{ posts(first: 1) { totalCount } }", json!({}))
        .await;
    ws.next("q").await;
    ws.complete("q").await;

    let create = "mutation C($p: Boolean!) { createPost(input: {title: \"Live post\", content: \"Written just now.\", published: $p}) { id } }";
    let draft = app
        .gql_as(Some(&alice), create, json!({ "p": false }))
        .await;
    let draft_id = draft["data"]["createPost"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let public = app.gql_as(Some(&alice), create, json!({ "p": true })).await;
    let public_id = public["data"]["createPost"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The draft is never announced; the published post is.
    let got = ws.next("p").await;
    assert_eq!(
        got,
        json!({ "data": { "postPublished": {
            "__typename": "Post", "id": public_id, "title": "Live post", "author": { "name": "Alice Liddell" }
        } } })
    );
    // Publishing the draft announces it.
    app.gql_as(
        Some(&alice),
        "mutation P($id: ID!) { publishPost(id: $id) { id } }",
        json!({ "id": draft_id }),
    )
    .await;
    assert_eq!(ws.next("p").await["data"]["postPublished"]["id"], draft_id);
    // Unpublishing announces nothing.
    app.gql_as(
        Some(&alice),
        "mutation U($id: ID!) { unpublishPost(id: $id) { id } }",
        json!({ "id": draft_id }),
    )
    .await;
    ws.silent(300).await;

    // A client `complete` stops it: nothing more arrives.
    ws.send(json!({ "type": "complete", "id": "p" })).await;
    ws.subscribe("q2", "{ me { id } }", json!({})).await;
    ws.next("q2").await;
    ws.complete("q2").await;
    app.gql_as(Some(&alice), create, json!({ "p": true })).await;
    ws.silent(300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_added_follows_one_visible_post() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let bob = token_for(fx.bob);
    let sub = "subscription C($id: ID!) { commentAdded(postId: $id) { id body author { name } } }";

    // Someone else's draft is NOT_FOUND, like a missing post, and the subscription ends there.
    let mut ws = Ws::ready(&app, Some(&bob)).await;
    for id in [fx.alice_draft, 999_999] {
        ws.subscribe("d", sub, json!({ "id": id.to_string() }))
            .await;
        let answer = ws.next("d").await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{answer}"
        );
        assert_eq!(
            answer["errors"][0]["message"],
            format!("No post with id {id}.")
        );
        ws.complete("d").await;
    }

    let post = fx.alice_posts[0];
    ws.subscribe("c", sub, json!({ "id": post.to_string() }))
        .await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    ws.next("q").await;
    ws.complete("q").await;
    let add =
        "mutation A($id: ID!, $b: String!) { addComment(input: {postId: $id, body: $b}) { id } }";
    // A comment on another post is not announced here.
    app.gql_as(
        Some(&bob),
        add,
        json!({ "id": fx.bob_posts[0].to_string(), "b": "elsewhere" }),
    )
    .await;
    let added = app
        .gql_as(
            Some(&bob),
            add,
            json!({ "id": post.to_string(), "b": "Live comment" }),
        )
        .await;
    let got = ws.next("c").await;
    assert_eq!(
        got,
        json!({ "data": { "commentAdded": {
            "id": added["data"]["addComment"]["id"], "body": "Live comment", "author": { "name": "Bob Marley" }
        } } })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_updated_follows_changes_and_ends_when_the_post_disappears() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let alice = token_for(fx.alice);
    let post = fx.alice_posts[1].to_string();
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe(
        "u",
        "subscription U($id: ID!) { postUpdated(id: $id) { id title published } }",
        json!({ "id": post }),
    )
    .await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    ws.next("q").await;
    ws.complete("q").await;
    let update =
        "mutation U($id: ID!, $t: String!) { updatePost(id: $id, input: {title: $t}) { id } }";
    app.gql_as(Some(&alice), update, json!({ "id": post, "t": "Renamed" }))
        .await;
    assert_eq!(
        ws.next("u").await,
        json!({ "data": { "postUpdated": { "id": post, "title": "Renamed", "published": true } } })
    );
    // Unpublished: invisible to this anonymous subscriber, so `null` and complete.
    app.gql_as(
        Some(&alice),
        "mutation U($id: ID!) { unpublishPost(id: $id) { id } }",
        json!({ "id": post }),
    )
    .await;
    assert_eq!(
        ws.next("u").await,
        json!({ "data": { "postUpdated": null } })
    );
    ws.complete("u").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_queries_send_changes_only() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let bob = token_for(fx.bob);
    let alice = token_for(fx.alice);
    let post = fx.alice_posts[0].to_string();
    let live = "query Live($id: ID!) @live { post(id: $id) { title commentCount } }";
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe("l", live, json!({ "id": post })).await;
    assert_eq!(
        ws.next("l").await,
        json!({ "data": { "post": { "title": "Ownership in Rust", "commentCount": 3 } } })
    );
    // A purge that leaves the answer as it was (same title written again) sends nothing.
    let update =
        "mutation U($id: ID!, $t: String!) { updatePost(id: $id, input: {title: $t}) { id } }";
    app.gql_as(
        Some(&alice),
        update,
        json!({ "id": post, "t": "Ownership in Rust" }),
    )
    .await;
    ws.silent(400).await;
    // A comment changes the count: the new result is sent.
    app.gql_as(
        Some(&bob),
        "mutation A($id: ID!) { addComment(input: {postId: $id, body: \"+1\"}) { id } }",
        json!({ "id": post }),
    )
    .await;
    assert_eq!(
        ws.next("l").await,
        json!({ "data": { "post": { "title": "Ownership in Rust", "commentCount": 4 } } })
    );

    // The same over SSE: the first result at once, then the change.
    let mut sse = Sse::open(
        &app,
        None,
        json!({ "query": live, "variables": { "id": post } }),
    )
    .await;
    assert_eq!(sse.next().await["data"]["post"]["commentCount"], 4);
    app.gql_as(
        Some(&alice),
        update,
        json!({ "id": post, "t": "Ownership, live" }),
    )
    .await;
    assert_eq!(sse.next().await["data"]["post"]["title"], "Ownership, live");
    assert_eq!(
        ws.next("l").await["data"]["post"]["title"],
        "Ownership, live"
    );
    // Identical live queries of one scope share one re-execution.
    let before = app.metric("folio_live_reexecutions_total").await;
    app.gql_as(Some(&alice), update, json!({ "id": post, "t": "Shared" }))
        .await;
    assert_eq!(sse.next().await["data"]["post"]["title"], "Shared");
    assert_eq!(ws.next("l").await["data"]["post"]["title"], "Shared");
    assert_eq!(
        app.metric("folio_live_reexecutions_total").await - before,
        1.0
    );
    assert_eq!(app.metric("folio_live_queries").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_is_checked_at_every_re_execution() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let admin = crate::helpers::admin_token(&app.store, fx.carol).await;
    let other_admin = new_admin(&app.store).await;
    let mut ws = Ws::ready(&app, Some(&admin)).await;
    ws.subscribe(
        "l",
        "query @live { users(first: 2) { totalCount } }",
        json!({}),
    )
    .await;
    let first = ws.next("l").await;
    assert!(
        first["data"]["users"]["totalCount"].as_i64().is_some(),
        "{first}"
    );
    // Carol is demoted by another admin: her live query is re-run as the plain user she now is.
    let demoted = app
        .gql_as(
            Some(&other_admin),
            "mutation D($id: ID!) { setUserRole(userId: $id, role: USER) { id } }",
            json!({ "id": fx.carol.to_string() }),
        )
        .await;
    assert!(demoted["errors"].is_null(), "{demoted}");
    let after = ws.next("l").await;
    assert_eq!(
        after["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_limited_per_connection_and_per_instance() {
    let app = app_with(|c| {
        c.live.ws_max_subscriptions = 2;
        c.live.max_subscriptions = 3;
    })
    .await;
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe("1", PUBLISHED, json!({})).await;
    ws.subscribe("2", PUBLISHED, json!({})).await;
    ws.subscribe("3", PUBLISHED, json!({})).await;
    assert_eq!(ws.refused("3").await, "TOO_MANY_SUBSCRIPTIONS");
    // The connection stays usable.
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.message().await["type"], "pong");

    // Per instance: two running here, one more elsewhere, then the fourth is refused.
    let mut other = Ws::ready(&app, None).await;
    other.subscribe("a", PUBLISHED, json!({})).await;
    other.subscribe("q", "{ me { id } }", json!({})).await;
    other.next("q").await;
    other.complete("q").await;
    other.subscribe("b", PUBLISHED, json!({})).await;
    assert_eq!(other.refused("b").await, "TOO_MANY_SUBSCRIPTIONS");
    assert_eq!(app.metric("folio_live_subscriptions").await, 3.0);
    drop(ws);
    // Leaving frees the places.
    let mut freed = false;
    for _ in 0..50 {
        if app.metric("folio_live_subscriptions").await == 1.0 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(freed, "closing a connection ends its subscriptions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_disconnected_not_buffered() {
    let app = app_with(|c| c.live.queue = 4).await;
    let fx = Fixture::create(&app.store).await;
    let alice = token_for(fx.alice);
    let post = fx.alice_posts[0].to_string();
    let big = "x".repeat(40_000);
    let update =
        "mutation U($id: ID!, $c: String!) { updatePost(id: $id, input: {content: $c}) { id } }";
    app.gql_as(Some(&alice), update, json!({ "id": post, "c": big }))
        .await;
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe(
        "l",
        "query L($id: ID!) @live { post(id: $id) { content updatedAt } }",
        json!({ "id": post }),
    )
    .await;
    ws.next("l").await;
    // The client stops reading; every change makes a ~40 kB message. Socket buffers fill, then the queue.
    let mut dropped = false;
    for i in 0..400 {
        let content = format!("{i}{}", "y".repeat(40_000));
        app.gql_as(Some(&alice), update, json!({ "id": post, "c": content }))
            .await;
        if i % 10 == 9 && app.metric("folio_live_slow_consumers_total").await >= 1.0 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "a client that never reads is disconnected");
    // What it finds when it reads again: the messages that were written, then the close with 4500.
    loop {
        match ws.recv().await {
            Got::Message(_) => continue,
            Got::Closed(code, reason) => {
                assert_eq!(code, 4500, "{reason}");
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_with_1001_and_ends_event_streams() {
    let mut app = TestApp::spawn().await;
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe("p", PUBLISHED, json!({})).await;
    let mut sse = Sse::open(&app, None, json!({ "query": PUBLISHED })).await;
    ws.subscribe("q", "{ me { id } }", json!({})).await;
    ws.next("q").await;
    app.trigger_stop();
    let (code, _) = loop {
        match ws.recv().await {
            Got::Closed(code, reason) => break (code, reason),
            Got::Message(_) => continue,
        }
    };
    assert_eq!(code, 1001);
    assert!(sse.ended().await, "the event stream ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_subscriptions_and_refuse_like_http() {
    let app = TestApp::spawn().await;
    let fx = Fixture::create(&app.store).await;
    let alice = token_for(fx.alice);
    // A subscription over POST, as Alice.
    let mut sse = Sse::open(&app, Some(&alice), json!({ "query": PUBLISHED })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = app
        .gql_as(
            Some(&alice),
            "mutation { createPost(input: {title: \"SSE post\", content: \"Streamed content.\", published: true}) { id } }",
            json!({}),
        )
        .await;
    let got = sse.next().await;
    assert_eq!(
        got["data"]["postPublished"]["id"],
        created["data"]["createPost"]["id"]
    );

    // A query streams its one result and completes.
    let mut once = Sse::open(
        &app,
        None,
        json!({ "query": "{ posts(first: 1) { totalCount } }" }),
    )
    .await;
    assert!(
        once.next().await["data"]["posts"]["totalCount"]
            .as_i64()
            .is_some()
    );
    assert!(once.ended().await);

    // Refusals answer like GraphQL over HTTP: 400 with the code; a bad token 401.
    let res = Sse::post(&app, None, json!({ "query": "subscription { nope }" })).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    let res = Sse::post(&app, Some("nope"), json!({ "query": PUBLISHED })).await;
    assert_eq!(res.status(), 401);

    // GET may subscribe, never mutate.
    let url = format!("{}/graphql", app.base);
    let res = app
        .client
        .get(&url)
        .query(&[("query", "mutation { logout }")])
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 405);
    let res = app
        .client
        .get(&url)
        .query(&[("query", PUBLISHED)])
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_instance_reaches_subscribers_on_another() {
    if !uses_redis() {
        // Without Redis each instance has its own in-process bus; the Node suite and this test on Redis
        // cover the cross-instance path.
        return;
    }
    let db = TestDb::create().await;
    let config = test_config(&db);
    let a = TestApp::spawn_with(db, config.clone()).await;
    let b = spawn_instance(config).await;
    let fx = Fixture::create(&a.store).await;
    let post = fx.alice_posts[0].to_string();
    let mut on_b = Ws::ready(&b, None).await;
    on_b.subscribe(
        "l",
        "query L($id: ID!) @live { post(id: $id) { commentCount } }",
        json!({ "id": post }),
    )
    .await;
    assert_eq!(on_b.next("l").await["data"]["post"]["commentCount"], 3);
    on_b.subscribe(
        "c",
        "subscription C($id: ID!) { commentAdded(postId: $id) { body } }",
        json!({ "id": post }),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.gql_as(
        Some(&token_for(fx.bob)),
        "mutation A($id: ID!) { addComment(input: {postId: $id, body: \"from A\"}) { id } }",
        json!({ "id": post }),
    )
    .await;
    let mut seen = (false, false);
    while seen != (true, true) {
        let m = on_b.message().await;
        match m["id"].as_str() {
            Some("l") => {
                assert_eq!(m["payload"]["data"]["post"]["commentCount"], 4);
                seen.0 = true;
            }
            Some("c") => {
                assert_eq!(m["payload"]["data"]["commentAdded"]["body"], "from A");
                seen.1 = true;
            }
            _ => panic!("unexpected {m}"),
        }
    }
}

/// A GraphQL-over-SSE stream (distinct connections mode).
struct Sse {
    response: reqwest::Response,
    buffer: String,
}

impl Sse {
    async fn post(app: &TestApp, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut req = app
            .client
            .post(format!("{}/graphql", app.base))
            .header("accept", "text/event-stream")
            .json(&body);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("sse request")
    }

    async fn open(app: &TestApp, token: Option<&str>, body: Value) -> Sse {
        let response = Sse::post(app, token, body).await;
        assert_eq!(response.status(), 200);
        Sse {
            response,
            buffer: String::new(),
        }
    }

    /// The next event as (event, data); `None` when the stream ended.
    async fn event(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let raw: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::new();
                let mut data = String::new();
                for line in raw.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if event.is_empty() && data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, data));
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("the stream answers in time")
                .expect("stream");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    async fn next(&mut self) -> Value {
        let (event, data) = self.event().await.expect("an event");
        assert_eq!(event, "next", "{data}");
        serde_json::from_str(&data).expect("JSON data")
    }

    /// The stream completes (a `complete` event, then the end), or just ends.
    async fn ended(&mut self) -> bool {
        loop {
            match self.event().await {
                None => return true,
                Some((event, _)) if event == "complete" => continue,
                Some(_) => return false,
            }
        }
    }
}

/// The page a browser gets at `/graphql`.
async fn graphiql_page(app: &TestApp) -> String {
    app.client
        .get(format!("{}/graphql", app.base))
        .header("accept", "text/html")
        .send()
        .await
        .expect("page")
        .text()
        .await
        .expect("text")
}

/// The `src` and `href` URLs of a page's scripts and stylesheets.
fn asset_urls(page: &str) -> Vec<String> {
    page.split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphiql_runs_from_folios_own_assets_and_knows_the_websocket() {
    let app = TestApp::spawn().await;
    let page = graphiql_page(&app).await;
    assert!(
        page.contains("graphqlWs.createClient"),
        "subscriptions go over the WebSocket"
    );
    let urls = asset_urls(&page);
    assert_eq!(urls.len(), 5, "{urls:?}");
    for url in urls {
        assert!(
            url.starts_with("/graphiql/"),
            "served by Folio itself: {url}"
        );
        let res = app.get(&url).await;
        assert_eq!(res.status(), 200, "{url}");
        assert!(
            res.headers()["cache-control"]
                .to_str()
                .expect("header")
                .contains("immutable")
        );
        assert!(res.bytes().await.expect("body").len() > 5_000, "{url}");
    }
    assert_eq!(app.get("/graphiql/4.1.2/nope.js").await.status(), 404);

    // With a CDN configured, the page loads from it instead.
    let cdn = app_with(|c| c.live.graphiql_cdn = Some("https://cdn.example".into())).await;
    let urls = asset_urls(&graphiql_page(&cdn).await);
    assert_eq!(urls.len(), 5);
    assert!(
        urls.iter().all(|u| u.starts_with("https://cdn.example/")),
        "{urls:?}"
    );
}

/// A `redis-server` of the test's own on a free port, so it can be stopped and started again.
struct OwnRedis {
    port: u16,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server runs (it is installed wherever FOLIO_TEST_REDIS_URL is set)");
        Self {
            port,
            child: Some(child),
        }
    }

    async fn wait_ready(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_subscribers_still_get_local_events_and_live_queries_resync_when_it_returns()
{
    if !uses_redis() {
        // This test runs a Redis of its own: it runs where the Redis suite runs.
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut redis = OwnRedis::start_on(port);
    redis.wait_ready().await;
    let db = TestDb::create().await;
    let mut config = test_config(&db);
    config.cache.redis = Some(RedisTarget::Url(format!("redis://127.0.0.1:{port}").into()));
    let app = TestApp::spawn_with(db, config).await;
    let fx = Fixture::create(&app.store).await;
    let post = fx.alice_posts[0].to_string();
    let mut ws = Ws::ready(&app, None).await;
    ws.subscribe(
        "l",
        "query L($id: ID!) @live { post(id: $id) { title } }",
        json!({ "id": post }),
    )
    .await;
    assert_eq!(
        ws.next("l").await["data"]["post"]["title"],
        "Ownership in Rust"
    );

    redis.stop();
    let update =
        "mutation U($id: ID!, $t: String!) { updatePost(id: $id, input: {title: $t}) { id } }";
    let alice = token_for(fx.alice);
    let done = app
        .gql_as(
            Some(&alice),
            update,
            json!({ "id": post, "t": "Written without Redis" }),
        )
        .await;
    assert!(done["errors"].is_null(), "{done}");
    // This instance's subscribers hear of it all the same; the failure is counted.
    assert_eq!(
        ws.next("l").await["data"]["post"]["title"],
        "Written without Redis"
    );
    assert!(app.metric("folio_live_bus_errors_total").await >= 1.0);

    // Redis returns: every live query re-runs once, since it may have missed a purge from another instance.
    let before = app.metric("folio_live_reexecutions_total").await;
    let _redis = OwnRedis::start_on(port);
    let mut rerun = false;
    for _ in 0..100 {
        if app.metric("folio_live_reexecutions_total").await > before {
            rerun = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rerun, "live queries re-run when the bus is back");
    // Nothing changed meanwhile: nothing is sent.
    ws.silent(300).await;
}

/// An id is free again as soon as its `complete` arrives (found by CI: the id used to be released a moment after
/// `complete` was sent, and a client that reused it at once was closed with 4409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_is_reusable_as_soon_as_it_completes() {
    let app = TestApp::spawn().await;
    let mut ws = Ws::ready(&app, None).await;
    for _ in 0..200 {
        ws.subscribe("same", "{ me { id } }", json!({})).await;
        ws.next("same").await;
        ws.complete("same").await;
    }
    for _ in 0..50 {
        ws.subscribe("same", "{ nope }", json!({})).await;
        assert_eq!(ws.refused("same").await, "GRAPHQL_VALIDATION_FAILED");
    }
}
