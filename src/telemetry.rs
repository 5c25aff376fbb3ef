//! Logs, traces and metrics: the tracing subscriber (logs, and OpenTelemetry spans over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set), and the Prometheus registry served on `/metrics`.
//!
//! Metrics live in a registry owned by each `App` rather than a process-global one, so two apps in one process
//! (the integration tests start many) never mix their counts.
//!
//! Spans exported (GraphQL, database and HTTP semantic conventions; not one per field): `request` per HTTP
//! request, its parent the caller's W3C `traceparent`; `graphql.operation` per operation; one per SQL statement
//! (made from sqlx's statement events: `db.system`, `db.statement` as prepared, never values); `cache.lookup`,
//! `cache.store`, `cache.purge`. They are batched and exported on a thread of their own; a collector that cannot
//! be reached costs a counted error (`folio_trace_export_errors_total`), never a request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, SystemTime};

use crate::cache::CacheMetrics;
use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use tracing::Subscriber;
use tracing::dispatcher::WeakDispatch;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};

use crate::config::{Config, LogFormat, TraceSampler, TracingConfig};

/// Whether spans are exported (so the HTTP layer only reads `traceparent` when someone will see it).
static TRACING: AtomicBool = AtomicBool::new(false);

/// Batches the collector refused or never received: shared by every registry (`Metrics::new`), as the exporter
/// is the process's.
static EXPORT_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new(
        "folio_trace_export_errors_total",
        "Span batches that could not be exported (collector unreachable or refusing)",
    )
    .unwrap_or_else(|_| unreachable!("a valid metric name"))
});

/// Whether spans are being exported.
pub fn tracing_enabled() -> bool {
    TRACING.load(Ordering::Relaxed)
}

/// When spans are exported: names the HTTP request's `span` (kind server) and makes the caller's trace (W3C
/// `traceparent`, e.g. a gateway's span) its parent. Otherwise nothing (and the log lines stay as they were).
pub fn continue_trace<B>(span: &tracing::Span, request: &axum::http::Request<B>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !tracing_enabled() {
        return;
    }
    span.record(
        "otel.name",
        format!("{} {}", request.method(), request.uri().path()),
    );
    span.record("otel.kind", "server");
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    let _ = span.set_parent(parent);
}

/// Renames the exported span of `span` (which may have started already).
pub fn rename(span: &tracing::Span, name: String) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.context().span().update_name(name);
}

/// Keeps the exporter alive; dropping it flushes the spans still queued.
pub struct TracingGuard(Option<SdkTracerProvider>);

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("folio: flushing traces at exit failed: {err}");
        }
    }
}

/// Installs the global tracing subscriber: logs, plus spans over OTLP when configured. Call once, from `main`,
/// and keep the guard until exit.
pub fn init_tracing(config: &Config) -> TracingGuard {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a file or a log pipeline are noise.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_target(false)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(colour)
            .boxed(),
    }
    .with_filter(filter);
    let (provider, spans) = match exporter(&config.tracing) {
        Ok(Some(provider)) => {
            let tracer = provider.tracer("folio");
            let system = match config.database_kind() {
                Ok(crate::config::DatabaseKind::Sqlite) => "sqlite",
                _ => "postgresql",
            };
            // Folio's own spans, and sqlx's statement events (which become SQL spans).
            let ours = filter::Targets::new().with_target("folio", tracing::Level::DEBUG);
            // The statement events, and (so that it sees what they ran in) Folio's spans.
            let statements = filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE)
                .with_target("folio", tracing::Level::DEBUG);
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer.clone())
                .with_filter(ours)
                .and_then(StatementSpans::new(tracer, system).with_filter(statements));
            (Some(provider), Some(layer))
        }
        Ok(None) => (None, None),
        Err(err) => {
            eprintln!("folio: tracing is off: {err:#}");
            (None, None)
        }
    };
    TRACING.store(provider.is_some(), Ordering::Relaxed);
    // Not `.with(Option<layer>)`: an optional layer does not pass on the dispatch that `StatementSpans` needs.
    let installed = match spans {
        Some(spans) => tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init(),
        None => tracing_subscriber::registry().with(logs).try_init(),
    };
    if let Err(err) = installed {
        eprintln!("folio: tracing was already initialised: {err}");
    }
    TracingGuard(provider)
}

/// The OTLP exporter `config` asks for; `None` without an endpoint.
fn exporter(config: &TracingConfig) -> anyhow::Result<Option<SdkTracerProvider>> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let Some(endpoint) = &config.endpoint else {
        return Ok(None);
    };
    // The exporter's HTTP client speaks TLS to an `https://` collector with the process's provider.
    crate::install_crypto_provider();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(5))
        .with_headers(Default::default())
        .build()?;
    let sampler = match config.sampler {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::Ratio(r) => Sampler::TraceIdRatioBased(r),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedRatio(r) => {
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
        }
    };
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(config.service_name.clone())
        .build();
    // Exported every second (not the default five): a trace shows up while the incident is still on screen.
    let batch = opentelemetry_sdk::trace::BatchSpanProcessor::builder(Counted(exporter))
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    Ok(Some(provider))
}

/// An exporter that counts the batches it could not deliver.
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.0.export(batch).await;
        if result.is_err() {
            EXPORT_ERRORS.inc();
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// Turns sqlx's statement events (one per statement, when it finishes) into client spans under the span the
/// statement ran in: `db.system` and `db.statement` (the prepared text: placeholders, never values).
struct StatementSpans {
    tracer: opentelemetry_sdk::trace::SdkTracer,
    /// `db.system`: `postgresql` or `sqlite`.
    system: &'static str,
    dispatch: OnceLock<WeakDispatch>,
}

impl StatementSpans {
    fn new(tracer: opentelemetry_sdk::trace::SdkTracer, system: &'static str) -> Self {
        Self {
            tracer,
            system,
            dispatch: OnceLock::new(),
        }
    }
}

/// The fields of a sqlx statement event that a span needs.
#[derive(Default)]
struct Statement {
    summary: String,
    text: String,
    elapsed: f64,
    rows: Option<i64>,
}

impl tracing::field::Visit for Statement {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.text = value.trim().to_owned(),
            _ => {}
        }
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed = value;
        }
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "rows_returned" {
            self.rows = i64::try_from(value).ok();
        }
    }

    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> Layer<S> for StatementSpans
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some(span) = ctx.event_span(event) else {
            // A statement outside any request (a migration, a health check): not traced.
            return;
        };
        let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade) else {
            return;
        };
        let Some(parent) = tracing_opentelemetry::get_otel_context(&span.id(), &dispatch) else {
            return;
        };
        {
            use opentelemetry::trace::TraceContextExt;
            // A trace the sampler dropped: its statements would be dropped too.
            if !parent.span().span_context().is_sampled() {
                return;
            }
        }
        let mut statement = Statement::default();
        event.record(&mut statement);
        // sqlx gives the whole text only when it is longer than its summary.
        let text = if statement.text.is_empty() {
            statement.summary.clone()
        } else {
            statement.text
        };
        let end = SystemTime::now();
        let start = end - Duration::from_secs_f64(statement.elapsed.max(0.0));
        let name = statement
            .summary
            .split_whitespace()
            .next()
            .unwrap_or("SQL")
            .to_uppercase();
        let mut attributes = vec![
            KeyValue::new("db.system", self.system),
            KeyValue::new("db.statement", text),
        ];
        if let Some(rows) = statement.rows {
            attributes.push(KeyValue::new("db.response.returned_rows", rows));
        }
        let mut otel = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        otel.end_with_timestamp(end);
    }
}

/// The service's counters and histograms.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `folio_db_statements_total`: every SQL statement the store runs.
    pub db_statements: IntCounter,
    /// `folio_http_requests_total{status}`.
    pub http_requests: IntCounterVec,
    /// `folio_http_request_duration_seconds`.
    pub http_duration: Histogram,
    /// `folio_cache_{hits,misses,bypass,purged,errors}_total`.
    pub cache: CacheMetrics,
    /// `folio_rate_limited_total`: requests refused with 429.
    pub rate_limited: IntCounter,
    /// `folio_rate_limit_errors_total`: limiter calls that could not reach Redis (and were allowed).
    pub rate_limit_errors: IntCounter,
    /// `folio_graphql_compiled_total`: queries answered by a compiled plan (see `graphql/compiled`) rather
    /// than by the executor.
    pub compiled: IntCounter,
    /// `folio_documents_unknown_total`: documents outside the manifests that ran (`FOLIO_DOCUMENTS=log`).
    pub documents_unknown: IntCounter,
    /// `folio_persisted_query_errors_total`: APQ registry calls that could not reach Redis.
    pub persisted_errors: IntCounter,
    /// `folio_replica_*`: where queries read with read replicas configured, and marks that could not be written.
    pub replicas: crate::replicas::ReplicaMetrics,
    /// `folio_live_*`: connections, subscriptions, live queries, events, re-executions, slow consumers, bus errors.
    pub live: crate::live::LiveMetrics,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let db_statements =
            IntCounter::new("folio_db_statements_total", "SQL statements executed")?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "folio_http_requests_total",
                "HTTP requests answered, by status code",
            ),
            &["status"],
        )?;
        let http_duration = Histogram::with_opts(
            HistogramOpts::new(
                "folio_http_request_duration_seconds",
                "Time from request to response head",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
        )?;
        let counter = |name: &str, help: &str| -> anyhow::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let cache = CacheMetrics {
            hits: counter("folio_cache_hits_total", "Responses served from the cache")?,
            misses: counter(
                "folio_cache_misses_total",
                "Cache lookups that found nothing",
            )?,
            bypass: counter(
                "folio_cache_bypass_total",
                "Requests answered without the cache (mutations, cache off or unreachable)",
            )?,
            purged: counter(
                "folio_cache_purged_total",
                "Distinct tags purged from the response cache",
            )?,
            errors: counter(
                "folio_cache_errors_total",
                "Failed cache backend calls (Redis unreachable, timeouts)",
            )?,
            lookup_calls: counter(
                "folio_cache_lookup_calls_total",
                "Redis calls made for cache lookups and stores (one serves every request that asked or stored while the one before ran)",
            )?,
            ahead: counter(
                "folio_cache_ahead_total",
                "Executions started while their lookup ran, for documents whose lookups kept missing",
            )?,
            ahead_dropped: counter(
                "folio_cache_ahead_dropped_total",
                "Executions started ahead of their lookup and dropped because it found the answer",
            )?,
        };
        let rate_limited = counter(
            "folio_rate_limited_total",
            "Requests refused by a rate limit",
        )?;
        let rate_limit_errors = counter(
            "folio_rate_limit_errors_total",
            "Rate limiter calls that failed (Redis unreachable) and were allowed",
        )?;
        let compiled = counter(
            "folio_graphql_compiled_total",
            "Queries answered by a compiled plan instead of the general executor",
        )?;
        let documents_unknown = counter(
            "folio_documents_unknown_total",
            "Documents outside the trusted manifests that ran (FOLIO_DOCUMENTS=log)",
        )?;
        let persisted_errors = counter(
            "folio_persisted_query_errors_total",
            "Persisted-query registry calls that failed (Redis unreachable)",
        )?;
        let gauge = |name: &str, help: &str| -> anyhow::Result<prometheus::IntGauge> {
            let g = prometheus::IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let live = crate::live::LiveMetrics {
            connections: gauge(
                "folio_live_connections",
                "Open WebSocket connections and SSE streams",
            )?,
            subscriptions: gauge("folio_live_subscriptions", "Running subscriptions")?,
            live_queries: gauge("folio_live_queries", "Running @live queries")?,
            events_sent: counter(
                "folio_live_events_sent_total",
                "Results sent by subscriptions and live queries",
            )?,
            reexecutions: counter(
                "folio_live_reexecutions_total",
                "Executions of subscriptions and live queries woken by a change",
            )?,
            slow_consumers: counter(
                "folio_live_slow_consumers_total",
                "Connections closed because their outgoing queue overflowed",
            )?,
            bus_errors: counter(
                "folio_live_bus_errors_total",
                "Changes that could not be published to or received from Redis pub/sub",
            )?,
        };
        let replica_reads = IntCounterVec::new(
            Opts::new(
                "folio_replica_reads_total",
                "Queries by where they read: replica, or primary and why (no_replica, behind, unknown, after_error)",
            ),
            &["route"],
        )?;
        registry.register(Box::new(replica_reads.clone()))?;
        let replicas = crate::replicas::ReplicaMetrics {
            reads: replica_reads,
            mark_errors: counter(
                "folio_replica_mark_errors_total",
                "Writes whose tags could not be marked in Redis: other instances may read them from a replica \
                 that has not replayed them",
            )?,
        };
        registry.register(Box::new(EXPORT_ERRORS.clone()))?;
        registry.register(Box::new(db_statements.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        Ok(Self {
            registry,
            db_statements,
            http_requests,
            http_duration,
            cache,
            rate_limited,
            rate_limit_errors,
            compiled,
            documents_unknown,
            persisted_errors,
            replicas,
            live,
        })
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %err, "encoding metrics failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
