//! A minimal Folio client: asks a running server for the newest posts and prints them.
//!
//! ```text
//! cargo run --release            # in one terminal
//! cargo run --example client     # in another; FOLIO_URL overrides http://127.0.0.1:8000/graphql
//! ```

use serde_json::{Value, json};

const QUERY: &str = "query Newest($first: Int) {
  posts(first: $first) {
    totalCount
    edges { node { id title author { name } commentCount } }
  }
}";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url =
        std::env::var("FOLIO_URL").unwrap_or_else(|_| "http://127.0.0.1:8000/graphql".to_owned());
    folio::install_crypto_provider();
    let body: Value = reqwest::Client::new()
        .post(&url)
        .json(&json!({ "query": QUERY, "variables": { "first": 5 } }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    if let Some(errors) = body.get("errors") {
        anyhow::bail!("the server answered with errors: {errors}");
    }
    let posts = &body["data"]["posts"];
    println!("{} published posts; the newest:", posts["totalCount"]);
    for edge in posts["edges"].as_array().into_iter().flatten() {
        let node = &edge["node"];
        println!(
            "  #{:<5} {}  by {} ({} comments)",
            node["id"].as_str().unwrap_or("?"),
            node["title"].as_str().unwrap_or("?"),
            node["author"]["name"].as_str().unwrap_or("?"),
            node["commentCount"]
        );
    }
    Ok(())
}
