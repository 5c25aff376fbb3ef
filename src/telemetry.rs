//! Logs and metrics: the tracing subscriber, and the Prometheus registry served on `/metrics`.
//!
//! Metrics live in a registry owned by each `App` rather than a process-global one, so two apps in one process
//! (the integration tests start many) never mix their counts.

use crate::cache::CacheMetrics;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Installs the global tracing subscriber. Call once, from `main`.
pub fn init_tracing(config: &Config) {
    let filter = EnvFilter::try_new(&config.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a file or a log pipeline are noise.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour);
    let result = match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(err) = result {
        eprintln!("folio: tracing was already initialised: {err}");
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
    /// `folio_replica_reads_total{route}`: where queries read with read replicas configured.
    pub replica_reads: IntCounterVec,
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
                "Cache entries dropped by purges",
            )?,
            errors: counter(
                "folio_cache_errors_total",
                "Failed cache backend calls (Redis unreachable, timeouts)",
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
            replica_reads,
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
