//! Fault drill: restarts PostgreSQL, then Redis, while a load of writes and reads runs against a running Folio,
//! and reports what clients saw. `.ci/run` runs it against a Folio on the CI PostgreSQL and Redis.
//!
//! ```sh
//! cargo run --example faults -- --url http://127.0.0.1:8000 \
//!     --pg-restart "pg_ctlcluster --skip-systemctl-redirect 15 main restart" \
//!     --redis-restart "redis-cli -p 6379 shutdown nosave; redis-server --daemonize yes --port 6379 --save '' --appendonly no"
//! ```
//!
//! It exits non-zero if Folio ever answered anything but success or `SERVICE_UNAVAILABLE` (an internal error, a
//! dropped connection), if a failure took longer than `--fail-fast-ms` to come back, if Folio had not recovered
//! by itself within `--recover-secs` of each restart, or if a `createPost` a client saw succeed is missing
//! afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Shell command that restarts PostgreSQL.
    #[arg(long)]
    pg_restart: String,
    /// Shell command that restarts Redis.
    #[arg(long)]
    redis_restart: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Longest a refused request may take (the pool's acquire timeout plus slack).
    #[arg(long, default_value_t = 6000)]
    fail_fast_ms: u64,
    /// Longest Folio may take to answer successfully again after a restart command returns.
    #[arg(long, default_value_t = 20)]
    recover_secs: u64,
}

/// What one client saw.
#[derive(Default, Debug, Clone)]
struct Counts {
    ok: u64,
    unavailable: u64,
    /// Anything else: the drill fails.
    wrong: u64,
    slowest_failure_ms: u64,
}

#[derive(Default)]
struct Shared {
    counts: Mutex<Counts>,
    /// Ids of posts whose `createPost` answered success.
    acknowledged: Mutex<Vec<String>>,
    /// Examples of wrong answers, for the report.
    wrong: Mutex<Vec<String>>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    folio::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let token = sign_up(&http, &args.url).await?;
    let shared = Arc::new(Shared::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..args.clients {
        let (http, url, token, shared, stop) = (
            http.clone(),
            args.url.clone(),
            token.clone(),
            shared.clone(),
            stop.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let write = (n + i as u64).is_multiple_of(2);
                let (query, variables) = if write {
                    (
                        "mutation C($i: CreatePostInput!) { createPost(input: $i) { id } }",
                        json!({ "i": { "title": format!("Drill {i}-{n}"), "content": "Written during the fault drill." } }),
                    )
                } else {
                    ("{ posts(first: 5) { totalCount nodes { id title } } }", json!({}))
                };
                let started = Instant::now();
                let answer = post(&http, &url, Some(&token), query, variables).await;
                let took = started.elapsed().as_millis() as u64;
                let mut counts = shared.counts.lock().await;
                match answer {
                    Answer::Ok(body) => {
                        counts.ok += 1;
                        if let Some(id) = body["data"]["createPost"]["id"].as_str() {
                            shared.acknowledged.lock().await.push(id.to_owned());
                        }
                    }
                    Answer::Unavailable => {
                        counts.unavailable += 1;
                        counts.slowest_failure_ms = counts.slowest_failure_ms.max(took);
                        drop(counts);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Answer::Wrong(what) => {
                        counts.wrong += 1;
                        let mut wrong = shared.wrong.lock().await;
                        if wrong.len() < 5 {
                            wrong.push(what);
                        }
                    }
                }
            }
        }));
    }
    let mut failed = Vec::new();
    for (name, command) in [
        ("PostgreSQL", &args.pg_restart),
        ("Redis", &args.redis_restart),
    ] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = shared.counts.lock().await.clone();
        let started = Instant::now();
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .status()
            .await?;
        if !status.success() {
            anyhow::bail!("the {name} restart command failed: {status}");
        }
        let restarted = started.elapsed();
        // Recovered: a write and a read both succeed again, with no restart of Folio.
        let deadline = Instant::now() + Duration::from_secs(args.recover_secs);
        let recovered = loop {
            let write = post(
                &http,
                &args.url,
                Some(&token),
                "mutation C($i: CreatePostInput!) { createPost(input: $i) { id } }",
                json!({ "i": { "title": "Recovery probe", "content": "Written to see the database back." } }),
            )
            .await;
            if let Answer::Ok(body) = write {
                if let Some(id) = body["data"]["createPost"]["id"].as_str() {
                    shared.acknowledged.lock().await.push(id.to_owned());
                }
                break Some(started.elapsed());
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = shared.counts.lock().await.clone();
        println!(
            "{name} restarted (the command took {:.1} s): {} requests succeeded and {} were refused with \
             SERVICE_UNAVAILABLE meanwhile; {}",
            restarted.as_secs_f64(),
            after.ok - before.ok,
            after.unavailable - before.unavailable,
            match recovered {
                Some(t) => format!(
                    "writes succeeded again {:.1} s after the restart began",
                    t.as_secs_f64()
                ),
                None => format!("NOT recovered within {} s", args.recover_secs),
            }
        );
        if recovered.is_none() {
            failed.push(format!("{name}: Folio did not recover by itself"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    let counts = shared.counts.lock().await.clone();
    println!(
        "load over the drill: {} succeeded, {} SERVICE_UNAVAILABLE (slowest refusal {} ms), {} other answers",
        counts.ok, counts.unavailable, counts.slowest_failure_ms, counts.wrong
    );
    if counts.wrong > 0 {
        failed.push(format!(
            "{} answers were neither success nor SERVICE_UNAVAILABLE, e.g. {:?}",
            counts.wrong,
            shared.wrong.lock().await
        ));
    }
    if counts.slowest_failure_ms > args.fail_fast_ms {
        failed.push(format!(
            "a refusal took {} ms (more than {} ms)",
            counts.slowest_failure_ms, args.fail_fast_ms
        ));
    }
    // Every write a client saw succeed is there.
    let acknowledged = shared.acknowledged.lock().await.clone();
    let mut missing = Vec::new();
    for chunk in acknowledged.chunks(20) {
        let fields: String = chunk
            .iter()
            .enumerate()
            .map(|(i, id)| format!("p{i}: post(id: \"{id}\") {{ id }} "))
            .collect();
        match post(
            &http,
            &args.url,
            Some(&token),
            &format!("{{ {fields} }}"),
            json!({}),
        )
        .await
        {
            Answer::Ok(body) => {
                for (i, id) in chunk.iter().enumerate() {
                    if body["data"][format!("p{i}")]["id"].as_str() != Some(id.as_str()) {
                        missing.push(id.clone());
                    }
                }
            }
            _ => anyhow::bail!("could not read the acknowledged posts back"),
        }
    }
    println!(
        "acknowledged writes: {}, found afterwards: {}",
        acknowledged.len(),
        acknowledged.len() - missing.len()
    );
    if !missing.is_empty() {
        failed.push(format!("acknowledged posts missing: {missing:?}"));
    }
    if failed.is_empty() {
        println!("fault drill passed");
        Ok(())
    } else {
        anyhow::bail!("fault drill failed:\n- {}", failed.join("\n- "))
    }
}

enum Answer {
    Ok(Value),
    Unavailable,
    Wrong(String),
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> Answer {
    let mut request = http
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return Answer::Wrong(format!("no answer: {err}")),
    };
    let status = response.status().as_u16();
    let body: Value = match response.json().await {
        Ok(body) => body,
        Err(err) => return Answer::Wrong(format!("{status} with a body that is not JSON: {err}")),
    };
    let codes: Vec<&str> = body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["extensions"]["code"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if codes.is_empty() && status == 200 {
        return Answer::Ok(body);
    }
    if !codes.is_empty() && codes.iter().all(|c| *c == "SERVICE_UNAVAILABLE") {
        return Answer::Unavailable;
    }
    Answer::Wrong(format!("{status} {body}"))
}

async fn sign_up(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let email = format!("drill-{}@example.com", uuid::Uuid::new_v4().simple());
    let answer = post(
        http,
        base,
        None,
        "mutation S($i: SignUpInput!) { signUp(input: $i) { token } }",
        json!({ "i": { "email": email, "name": "Drill", "password": "correct horse battery staple" } }),
    )
    .await;
    match answer {
        Answer::Ok(body) => body["data"]["signUp"]["token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("signUp answered no token")),
        _ => anyhow::bail!("signUp failed before the drill began"),
    }
}
