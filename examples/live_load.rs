//! Live-data load: holds many idle subscriptions on a running Folio, reports the server's resident memory per
//! subscription, then publishes posts and measures how long one event takes to reach every subscriber. With
//! `--write-url` pointing at a second instance (same PostgreSQL and Redis), the delay includes the trip over
//! Redis pub/sub. It measures; it asserts nothing.
//!
//! ```sh
//! cargo run --release -- serve &                       # one instance (note its pid)
//! cargo run --release --example live_load -- --url http://127.0.0.1:8000 --pid $! --subscriptions 10000
//!
//! # across instances: subscribers on B, writes on A
//! cargo run --release --example live_load -- --url http://127.0.0.1:8001 --write-url http://127.0.0.1:8000 \
//!     --subscriptions 1000 --rounds 50
//! ```
//!
//! Every subscriber runs `subscription { postPublished { id title author { name } } }` anonymously, so they
//! share one group (one execution per event, fanned out to all): what a popular public feed looks like. The
//! client runs on the same machine and its own reading is part of the fan-out time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser, Debug)]
struct Args {
    /// The instance the subscribers connect to.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// The instance the writes go to (default: the same).
    #[arg(long)]
    write_url: Option<String>,
    /// The subscribed instance's process id, to read its resident memory (Linux).
    #[arg(long)]
    pid: Option<u32>,
    /// Subscriptions to hold.
    #[arg(long, default_value_t = 10_000)]
    subscriptions: usize,
    /// Subscriptions per WebSocket (at most the server's FOLIO_WS_MAX_SUBSCRIPTIONS).
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// Events to publish and time.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
}

const SUBSCRIPTION: &str = "subscription { postPublished { id title author { name } } }";

/// Arrival times of the current round's events, shared by every connection's reader.
type Arrivals = Arc<Mutex<Vec<Instant>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    folio::install_crypto_provider();
    let http = reqwest::Client::new();
    let write_url = args.write_url.clone().unwrap_or_else(|| args.url.clone());
    let token = sign_up(&http, &write_url).await?;
    let rss_before = args.pid.map(rss);
    let connections = args.subscriptions.div_ceil(args.per_connection);
    let arrivals: Arrivals = Arc::new(Mutex::new(Vec::with_capacity(args.subscriptions)));
    let opened = Instant::now();
    let mut sockets = Vec::with_capacity(connections);
    let mut left = args.subscriptions;
    for _ in 0..connections {
        let here = left.min(args.per_connection);
        left -= here;
        sockets.push(open(&args.url, here, Arc::clone(&arrivals)).await?);
    }
    // Wait until the server runs them all.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut running = 0.0;
    while Instant::now() < deadline {
        running = metric(&http, &args.url, "folio_live_subscriptions").await?;
        if running as usize >= args.subscriptions {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} subscriptions on {} WebSockets running after {:.1} s (server reports {running})",
        args.subscriptions,
        connections,
        opened.elapsed().as_secs_f64()
    );
    if let (Some(before), Some(pid)) = (rss_before, args.pid) {
        let after = rss(pid);
        println!(
            "server resident memory: {:.1} MiB before, {:.1} MiB holding them: {:.0} bytes per subscription",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            after.saturating_sub(before) as f64 / args.subscriptions as f64
        );
    }
    let mut delays_ms: Vec<f64> = Vec::new();
    let mut complete_ms: Vec<f64> = Vec::new();
    for round in 0..args.rounds {
        arrivals.lock().await.clear();
        let title = format!("Load round {round}");
        let sent = gql(
            &http,
            &write_url,
            Some(&token),
            "mutation C($i: CreatePostInput!) { createPost(input: $i) { id } }",
            json!({ "i": { "title": title, "content": "Published to every subscriber.", "published": true } }),
        )
        .await?;
        // From the moment the writer has its answer: what a subscriber waits after the write is acknowledged.
        let answered = Instant::now();
        if sent["errors"].is_array() {
            anyhow::bail!("createPost failed: {sent}");
        }
        let deadline = answered + Duration::from_secs(60);
        loop {
            let got = arrivals.lock().await.len();
            if got >= args.subscriptions || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let times = arrivals.lock().await.clone();
        if times.len() < args.subscriptions {
            println!(
                "round {round}: only {} of {} subscribers got the event within 60 s",
                times.len(),
                args.subscriptions
            );
        }
        let mut round_delays: Vec<f64> = times
            .iter()
            .map(|t| t.saturating_duration_since(answered).as_secs_f64() * 1000.0)
            .collect();
        round_delays.sort_by(f64::total_cmp);
        if let Some(last) = round_delays.last() {
            complete_ms.push(*last);
        }
        delays_ms.extend(round_delays);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    delays_ms.sort_by(f64::total_cmp);
    complete_ms.sort_by(f64::total_cmp);
    println!(
        "delay from the write's response to each subscriber's event, over {} events x {} subscribers: \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        args.rounds,
        args.subscriptions,
        pct(&delays_ms, 0.50),
        pct(&delays_ms, 0.99),
        delays_ms.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "time until the last subscriber had it (fan-out of one event): median {:.2} ms, worst {:.2} ms",
        pct(&complete_ms, 0.50),
        complete_ms.last().copied().unwrap_or(f64::NAN)
    );
    drop(sockets);
    Ok(())
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Resident memory of `pid` in bytes.
fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// One WebSocket with `count` subscriptions; a task records when each `next` arrives.
async fn open(
    base: &str,
    count: usize,
    arrivals: Arrivals,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let url = format!("{}/graphql", base.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "graphql-transport-ws".parse()?);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    socket
        .send(Message::Text(
            json!({ "type": "connection_init" }).to_string().into(),
        ))
        .await?;
    for i in 0..count {
        let subscribe = json!({ "id": i.to_string(), "type": "subscribe", "payload": { "query": SUBSCRIPTION } });
        socket
            .send(Message::Text(subscribe.to_string().into()))
            .await?;
    }
    Ok(tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                if text.contains("\"type\":\"next\"") {
                    arrivals.lock().await.push(Instant::now());
                } else if text.contains("\"type\":\"ping\"") {
                    let _ = socket
                        .send(Message::Text(r#"{"type":"pong"}"#.into()))
                        .await;
                }
            }
        }
    }))
}

async fn gql(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let mut request = http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    Ok(request.send().await?.json().await?)
}

async fn sign_up(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let email = format!("load-{}@example.com", uuid::Uuid::new_v4().simple());
    let body = gql(
        http,
        base,
        None,
        "mutation S($i: SignUpInput!) { signUp(input: $i) { token } }",
        json!({ "i": { "email": email, "name": "Load writer", "password": "correct horse battery staple" } }),
    )
    .await?;
    body["data"]["signUp"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("signUp failed: {body}"))
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}
