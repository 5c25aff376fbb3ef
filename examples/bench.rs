//! A load generator for a running Folio: requests per second, p50/p99 latency and SQL statements per request
//! for a mix of operations. It measures; it asserts nothing.
//!
//! ```sh
//! cargo run --release --example bench -- --url http://127.0.0.1:8000 --seconds 10 --conns 32
//! cargo run --release --example bench -- --ops nested,post --seconds 5
//! ```
//!
//! Operations: `feed`, `detail` and `author`, the three workloads of `../shared/perf` (`feed` is the reference
//! query: 20 posts with author, comment count and 5 comments with their authors; `detail` one `post(id)` with its
//! author and 20 comments; `author` one `user(id)` with 10 posts and their comment counts), and each of them as
//! Apollo Client sends it, with fragments and `__typename` everywhere (`feed-apollo`, `detail-apollo`,
//! `author-apollo`); `nested` (the reference query), `post` (one `post(id)` with its comments), `post-apq` (the same operation sent as an automatic
//! persisted query: the hash and the variables, no text), `user` (`user(id) { posts }`), `search` (a
//! title/content search), `mutation` (`createPost` as a freshly signed-up user). Statements per request come from the server's
//! `folio_db_statements_total`, so run it against an otherwise idle server. With the response cache on, repeated
//! reads are hits; start Folio with `FOLIO_CACHE=off` to measure executions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Base URL of a running Folio.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Seconds per operation.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Comma-separated operations: feed, feed-apollo, detail, detail-apollo, author, author-apollo, nested, post,
    /// post-apq, user, search, mutation.
    #[arg(
        long,
        default_value = "feed,feed-apollo,detail,detail-apollo,author,author-apollo,post-apq,search,mutation"
    )]
    ops: String,
    /// Posts per page in the nested query.
    #[arg(long, default_value_t = 20)]
    posts: u32,
    /// How many post ids (and their authors) `detail`, `author`, `post` and `user` rotate over.
    #[arg(long, default_value_t = 500)]
    ids: usize,
}

const NESTED: &str = "query($n:Int!){ posts(first:$n){ edges{ node{ id title author{ name } commentCount \
    comments(first:5){ edges{ node{ body author{ name } } } } } } pageInfo{ hasNextPage endCursor } } }";
const POST: &str = "query($id:ID!){ post(id:$id){ id title content author{ name } comments(first:20){ nodes{ body author{ name } } } } }";
const USER: &str =
    "query($id:ID!){ user(id:$id){ name posts(first:10){ totalCount nodes{ id title } } } }";
const FEED: &str = NESTED;
const FEED_APOLLO: &str = "query Feed($n:Int!){ posts(first:$n){ __typename edges{ __typename node{ ...PostCard } } \
    pageInfo{ __typename hasNextPage endCursor } } } \
    fragment PostCard on Post{ __typename id title author{ ...Author } commentCount \
    comments(first:5){ __typename edges{ __typename node{ __typename body author{ ...Author } } } } } \
    fragment Author on User{ __typename id name }";
const DETAIL: &str = "query($id:ID!){ post(id:$id){ id title content author{ id name } commentCount comments(first:20){ \
    edges{ node{ id body author{ id name } } } pageInfo{ hasNextPage endCursor } } } }";
const DETAIL_APOLLO: &str = "query Detail($id:ID!){ post(id:$id){ ...PostDetail } } \
    fragment PostDetail on Post{ __typename id title content author{ __typename id name } commentCount \
    comments(first:20){ __typename edges{ __typename node{ ...CommentItem } } pageInfo{ __typename hasNextPage endCursor } } } \
    fragment CommentItem on Comment{ __typename id body author{ __typename id name } }";
const AUTHOR: &str = "query($id:ID!){ user(id:$id){ id name posts(first:10){ edges{ node{ id title commentCount } } \
    pageInfo{ hasNextPage endCursor } } } }";
const AUTHOR_APOLLO: &str = "query Author($id:ID!){ user(id:$id){ ...AuthorPage } } \
    fragment AuthorPage on User{ __typename id name posts(first:10){ __typename edges{ __typename node{ ...PostRow } } \
    pageInfo{ __typename hasNextPage endCursor } } } \
    fragment PostRow on Post{ __typename id title commentCount }";
const SEARCH: &str =
    "query($q:String!){ posts(first:10, filter:{ search:$q }){ nodes{ id title } } }";
const CREATE: &str = "mutation($i:CreatePostInput!){ createPost(input:$i){ id } }";

struct Sample {
    ids: Vec<String>,
    authors: Vec<String>,
    token: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    folio::install_crypto_provider();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.conns)
        .build()?;
    let endpoint = format!("{}/graphql", args.url.trim_end_matches('/'));
    let sample = prepare(&client, &endpoint, args.ops.contains("mutation"), args.ids).await?;
    // Registered once, as a client's first request would; from then on `post-apq` sends the hash only.
    client
        .post(&endpoint)
        .json(&json!({ "query": POST, "variables": { "id": sample.ids[0] }, "extensions": apq(POST) }))
        .send()
        .await?;
    println!(
        "{:<14} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "operation", "req/s", "p50", "p99", "errors", "SQL/req"
    );
    for op in args.ops.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let before = statements(&client, &args.url).await;
        let result = run(&client, &endpoint, op, &args, &sample).await;
        let after = statements(&client, &args.url).await;
        let per_req = match (before, after) {
            (Some(b), Some(a)) if result.requests > 0 => {
                format!("{:.2}", (a - b) / result.requests as f64)
            }
            _ => "-".into(),
        };
        println!(
            "{:<14} {:>9.0} {:>9} {:>9} {:>8} {:>9}",
            op,
            result.requests as f64 / result.elapsed.as_secs_f64(),
            fmt(result.p50),
            fmt(result.p99),
            result.errors,
            per_req
        );
    }
    Ok(())
}

fn fmt(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1000.0)
}

/// Ids to vary `post`/`user` over, and a token for the mutation.
async fn prepare(
    client: &reqwest::Client,
    endpoint: &str,
    mutation: bool,
    wanted: usize,
) -> anyhow::Result<Sample> {
    let (mut ids, mut authors, mut after) = (Vec::new(), Vec::new(), Value::Null);
    while ids.len() < wanted {
        let body = gql(
            client,
            endpoint,
            None,
            "query($a: String) { posts(first: 100, after: $a) { nodes { id author { id } } pageInfo { hasNextPage endCursor } } }",
            json!({ "a": after }),
        )
        .await?;
        let page = &body["data"]["posts"];
        let nodes = page["nodes"].as_array().cloned().unwrap_or_default();
        anyhow::ensure!(
            !nodes.is_empty() || !ids.is_empty(),
            "the server has no published posts; seed it first: {body}"
        );
        for n in &nodes {
            ids.extend(n["id"].as_str().map(str::to_owned));
            authors.extend(n["author"]["id"].as_str().map(str::to_owned));
        }
        after = page["pageInfo"]["endCursor"].clone();
        if page["pageInfo"]["hasNextPage"] != json!(true) {
            break;
        }
    }
    authors.sort();
    authors.dedup();
    let token = if mutation {
        let email = format!("bench-{}@example.com", uuid::Uuid::new_v4().simple());
        let body = gql(
            client,
            endpoint,
            None,
            "mutation($i: SignUpInput!) { signUp(input: $i) { token } }",
            json!({ "i": { "email": email, "name": "Bench", "password": "benchmark password" } }),
        )
        .await?;
        body["data"]["signUp"]["token"].as_str().map(str::to_owned)
    } else {
        None
    };
    Ok(Sample {
        ids,
        authors,
        token,
    })
}

/// `extensions.persistedQuery` for `query`.
fn apq(query: &str) -> Value {
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(query.as_bytes()));
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

async fn gql(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    query: &str,
    variables: Value,
) -> anyhow::Result<Value> {
    let mut req = client
        .post(endpoint)
        .json(&json!({ "query": query, "variables": variables }));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    Ok(req.send().await?.json().await?)
}

async fn statements(client: &reqwest::Client, base: &str) -> Option<f64> {
    let text = client
        .get(format!("{}/metrics", base.trim_end_matches('/')))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("folio_db_statements_total "))
        .and_then(|v| v.trim().parse().ok())
}

/// What the load generator reads of a response: whether it has errors. The rest is skipped, not built: a
/// `Value` tree of a 26 KB feed page cost this process (on the same cores as the server) more than the server
/// spent writing it, and skewed larger responses' figures.
#[derive(serde::Deserialize)]
struct Checked {
    errors: Option<serde::de::IgnoredAny>,
}

struct Outcome {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

async fn run(
    client: &reqwest::Client,
    endpoint: &str,
    op: &str,
    args: &Args,
    sample: &Sample,
) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let counter = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.conns)
        .map(|worker| {
            let (client, endpoint, stop, errors, counter) = (
                client.clone(),
                endpoint.to_owned(),
                stop.clone(),
                errors.clone(),
                counter.clone(),
            );
            let (ids, authors, token) = (sample.ids.clone(), sample.authors.clone(), sample.token.clone());
            let (op, posts) = (op.to_owned(), args.posts);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = worker;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let (query, vars, auth) = match op.as_str() {
                        "nested" | "feed" => (FEED, json!({ "n": posts }), None),
                        "feed-apollo" => (FEED_APOLLO, json!({ "n": posts }), None),
                        "detail" => (DETAIL, json!({ "id": ids[i % ids.len()] }), None),
                        "detail-apollo" => (DETAIL_APOLLO, json!({ "id": ids[i % ids.len()] }), None),
                        "author" => (AUTHOR, json!({ "id": authors[i % authors.len()] }), None),
                        "author-apollo" => {
                            (AUTHOR_APOLLO, json!({ "id": authors[i % authors.len()] }), None)
                        }
                        "post" | "post-apq" => (POST, json!({ "id": ids[i % ids.len()] }), None),
                        "user" => (USER, json!({ "id": authors[i % authors.len()] }), None),
                        "search" => {
                            const TERMS: [&str; 4] = ["synergy", "cloud", "market", "design"];
                            (SEARCH, json!({ "q": TERMS[i % TERMS.len()] }), None)
                        }
                        "mutation" => (
                            CREATE,
                            json!({ "i": { "title": format!("Benchmark post {i}"), "content": "Written by the load generator." } }),
                            token.as_deref(),
                        ),
                        other => {
                            eprintln!("unknown operation {other}");
                            return latencies;
                        }
                    };
                    let t = Instant::now();
                    let body = if op == "post-apq" {
                        json!({ "extensions": apq(query), "variables": vars })
                    } else {
                        json!({ "query": query, "variables": vars })
                    };
                    let mut req = client.post(&endpoint).json(&body);
                    if let Some(token) = auth {
                        req = req.bearer_auth(token);
                    }
                    let ok = match req.send().await {
                        Ok(res) if res.status().is_success() => res
                            .bytes()
                            .await
                            .ok()
                            .and_then(|b| serde_json::from_slice::<Checked>(&b).ok())
                            .is_some_and(|b| b.errors.is_none()),
                        _ => false,
                    };
                    latencies.push(t.elapsed());
                    counter.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                latencies
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(mut l) = t.await {
            all.append(&mut l);
        }
    }
    let elapsed = started.elapsed();
    all.sort();
    let pick = |q: f64| {
        all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)))
            .copied()
    };
    Outcome {
        requests: counter.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed,
        p50: pick(0.50).unwrap_or_default(),
        p99: pick(0.99).unwrap_or_default(),
    }
}
