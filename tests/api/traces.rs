//! OpenTelemetry: a real `folio` process exports its spans over OTLP/HTTP (protobuf) to a receiver this test
//! runs; under the caller's `traceparent` they form one tree (the HTTP request, the GraphQL operation, its SQL
//! statements and cache lookups), and no SQL parameter value appears anywhere in them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

use crate::helpers::{Fixture, TestDb, spawn_process_with, test_config};

/// An OTLP/HTTP receiver on an ephemeral port: every span it is sent, with its service name.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, Span)>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let request =
                    ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let mut sink = sink.lock().expect("lock");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .and_then(|v| match &v.value {
                            Some(Any::StringValue(s)) => Some(s.clone()),
                            _ => None,
                        })
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            sink.push((service.clone(), span));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Any> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    match attribute(span, key) {
        Some(Any::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// Every text in a span: its name, attributes, events and their attributes.
fn all_text(span: &Span) -> String {
    let mut out = format!("{} ", span.name);
    let attributes = span
        .attributes
        .iter()
        .chain(span.events.iter().flat_map(|e| &e.attributes));
    for a in attributes {
        out.push_str(&format!("{}={:?} ", a.key, a.value));
    }
    for e in &span.events {
        out.push_str(&e.name);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_form_one_tree_under_the_callers_traceparent_without_parameter_values() {
    let (endpoint, received) = receiver().await;
    let db = TestDb::create().await;
    let config = test_config(&db);
    let app = spawn_process_with(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "folio-under-test"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
        ],
    )
    .await;
    let f = Fixture::create(&app.store).await;

    // The gateway's span, as it would forward it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let gateway_span = "00f067aa0ba902b7";
    let needle = "needle-7f3a9c";
    let query = "query Search($s: String!, $id: ID!) { posts(first: 5, filter: { search: $s }) { nodes { id } } post(id: $id) { title } }";
    for _ in 0..2 {
        let res = app
            .client
            .post(format!("{}/graphql", app.base))
            .header("traceparent", format!("00-{trace_id}-{gateway_span}-01"))
            .json(&json!({ "query": query, "variables": { "s": needle, "id": f.alice_posts[0].to_string() } }))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.expect("json");
        assert!(body.get("errors").is_none(), "{body}");
    }

    // Wait for the batches (exported every second).
    let trace: Vec<Span> = {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let spans: Vec<Span> = received
                .lock()
                .expect("lock")
                .iter()
                .filter(|(service, s)| {
                    service == "folio-under-test" && hex(&s.trace_id) == trace_id
                })
                .map(|(_, s)| s.clone())
                .collect();
            let operations = spans.iter().filter(|s| s.name == "query Search").count();
            let lookups = spans.iter().filter(|s| s.name == "cache.lookup").count();
            if operations == 2
                && lookups == 2
                && spans.iter().any(|s| text(s, "db.statement").is_some())
            {
                break spans;
            }
            assert!(
                Instant::now() < deadline,
                "spans arrive: {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let by_id: HashMap<String, &Span> = trace.iter().map(|s| (hex(&s.span_id), s)).collect();
    let parent_of = |s: &Span| hex(&s.parent_span_id);
    // Is `ancestor` above `span` in the tree?
    let under = |span: &Span, ancestor: &Span| {
        let mut at = parent_of(span);
        while let Some(next) = by_id.get(&at) {
            if next.span_id == ancestor.span_id {
                return true;
            }
            at = parent_of(next);
        }
        false
    };

    // The HTTP spans hang under the gateway's span.
    let requests: Vec<&Span> = trace.iter().filter(|s| s.name == "POST /graphql").collect();
    assert_eq!(requests.len(), 2, "one span per HTTP request");
    for r in &requests {
        assert_eq!(
            parent_of(r),
            gateway_span,
            "the caller's traceparent is the parent"
        );
    }
    // One operation span per request, under it, named and typed by the GraphQL conventions.
    for op in trace.iter().filter(|s| s.name == "query Search") {
        assert!(
            requests.iter().any(|r| parent_of(op) == hex(&r.span_id)),
            "operation under its request"
        );
        assert_eq!(text(op, "graphql.operation.type"), Some("query"));
        assert_eq!(text(op, "graphql.operation.name"), Some("Search"));
        assert_eq!(
            text(op, "graphql.document"),
            None,
            "no document unless FOLIO_TRACE_DOCUMENTS"
        );
    }
    // SQL statements (the first request) and cache lookups (both; the second a hit) under an operation.
    let operations: Vec<&Span> = trace.iter().filter(|s| s.name == "query Search").collect();
    let statements: Vec<&Span> = trace
        .iter()
        .filter(|s| text(s, "db.statement").is_some())
        .collect();
    assert!(statements.len() >= 2, "a span per statement");
    for s in &statements {
        assert!(
            operations.iter().any(|op| under(s, op)),
            "{} is under an operation",
            s.name
        );
        assert!(text(s, "db.system").is_some());
    }
    let results: Vec<&str> = trace
        .iter()
        .filter(|s| s.name == "cache.lookup")
        .inspect(|s| assert!(operations.iter().any(|op| under(s, op))))
        .filter_map(|s| text(s, "cache.result"))
        .collect();
    assert!(
        results.contains(&"hit"),
        "a cache hit has its span: {results:?}"
    );
    // Not one span per field.
    assert!(trace.len() < 40, "{} spans", trace.len());
    // The search text went to the database as a bound parameter: it is in no span.
    for s in &trace {
        assert!(
            !all_text(s).contains(needle),
            "a parameter value leaked into {}",
            all_text(s)
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A collector that cannot be reached costs requests nothing; the lost batches are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_a_counted_error_only() {
    let db = TestDb::create().await;
    let config = test_config(&db);
    let app = spawn_process_with(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
            ("OTEL_TRACES_SAMPLER", "always_on"),
        ],
    )
    .await;
    let started = Instant::now();
    for _ in 0..20 {
        let body = app
            .gql("{ posts(first: 3) { nodes { id } } }", json!({}))
            .await;
        assert!(body.get("errors").is_none(), "{body}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "requests do not wait for the collector"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while app.metric("folio_trace_export_errors_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the failed export is counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
