//! A minimal OTLP/HTTP trace receiver for measuring Folio with tracing on: it takes protobuf batches on
//! `POST /v1/traces`, counts the spans and prints the count every five seconds. It keeps nothing.
//!
//! ```sh
//! cargo run --release --example otlp_sink -- 127.0.0.1:4318
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 folio serve
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:4318".to_owned());
    let spans = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let counter = Arc::clone(&counter);
            async move {
                match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => {
                        let n: usize = request
                            .resource_spans
                            .iter()
                            .flat_map(|r| &r.scope_spans)
                            .map(|s| s.spans.len())
                            .sum();
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        (axum::http::StatusCode::OK, Vec::new())
                    }
                    Err(_) => (axum::http::StatusCode::BAD_REQUEST, Vec::new()),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("OTLP sink on http://{addr}/v1/traces");
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let now = spans.load(Ordering::Relaxed);
            println!("spans: {now} (+{})", now - last);
            last = now;
        }
    });
    axum::serve(listener, app).await?;
    Ok(())
}
