//! Every setting, declared once, and the typed `Config` built from them. This is the only module that reads the
//! environment.
//!
//! `Settings` declares each setting with clap: its flag, its environment variable, its default and its help, so
//! `folio --help` lists them all and the README's configuration table names the same variables (a test checks
//! both). `Config::from_settings` turns the raw values into typed, checked configuration: durations, lists,
//! secrets (`secrecy`, never printed), the defaults that differ in production, and the combinations that must
//! agree. A command-line flag overrides its environment variable; `main` loads `.env` first.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use clap::{ArgAction, Args, FromArgMatches, ValueEnum};
use secrecy::SecretString;

use crate::redis_conn::RedisTarget;

/// Which database the service talks to, decided by `DATABASE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// `FOLIO_ENV`: development (friendly defaults) or production (secrets required, nothing permissive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    #[value(alias = "dev")]
    Development,
    #[value(alias = "prod")]
    Production,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `FOLIO_CACHE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum CacheChoice {
    Memory,
    Redis,
    Off,
}

/// Every setting as the command line and the environment give it, in groups (the headings of `folio --help`).
/// `declare` makes each one global (accepted after any subcommand) and names its value after its variable, so
/// an invalid value is reported under the name the operator set.
#[derive(Args, Clone, Debug)]
pub struct Settings {
    #[command(flatten, next_help_heading = "Server")]
    server: ServerSettings,
    #[command(flatten, next_help_heading = "Database")]
    database: DatabaseSettings,
    #[command(flatten, next_help_heading = "Cache")]
    cache: CacheSettings,
    #[command(flatten, next_help_heading = "Limits")]
    limits: LimitSettings,
    #[command(flatten, next_help_heading = "Authentication")]
    auth: AuthSettings,
    #[command(flatten, next_help_heading = "Persisted documents")]
    documents: DocumentSettings,
    #[command(flatten, next_help_heading = "Billing")]
    billing: BillingSettings,
    #[command(flatten, next_help_heading = "Live data")]
    live: LiveSettings,
    #[command(flatten, next_help_heading = "Tracing (OpenTelemetry)")]
    tracing: TracingSettings,
}

/// Traces over OTLP, with OpenTelemetry's standard variables.
#[derive(Args, Clone, Debug)]
struct TracingSettings {
    /// OTLP collector base URL, e.g. `http://otel-collector:4318` (spans go to `/v1/traces`); tracing is off
    /// without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// OTLP protocol: `http/protobuf` (the only one this build speaks).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    otlp_protocol: String,
    /// `service.name` of Folio's spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "folio")]
    service_name: String,
    /// `always_on`, `always_off`, `traceidratio`, `parentbased_always_on`, `parentbased_always_off` or
    /// `parentbased_traceidratio`.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        default_value = "parentbased_always_on"
    )]
    traces_sampler: String,
    /// The ratio of the `*traceidratio` samplers, 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value = "1.0", value_parser = trimmed::<f64>)]
    traces_sampler_arg: f64,
    /// Put the operation's document in `graphql.document` (it may hold literal values users typed).
    #[arg(long, env = "FOLIO_TRACE_DOCUMENTS", default_value = "false", value_parser = boolean, action = ArgAction::Set)]
    trace_documents: bool,
}

/// How the process serves and logs.
#[derive(Args, Clone, Debug)]
struct ServerSettings {
    /// `development` (friendly defaults) or `production` (secrets required, nothing permissive).
    #[arg(
        long = "env",
        env = "FOLIO_ENV",
        default_value = "development",
        ignore_case = true
    )]
    env: Environment,
    /// Address `folio serve` listens on (`0.0.0.0:8000` in a container).
    #[arg(long, env = "FOLIO_BIND", default_value = "127.0.0.1:8000", value_parser = trimmed::<SocketAddr>)]
    bind: SocketAddr,
    /// A second, operators-only address for `/metrics`, `/schema.graphql`, `/healthz` and `/readyz`; then the public one serves no metrics [default: unset; production serves metrics only here].
    #[arg(long, env = "FOLIO_ADMIN_BIND", value_parser = trimmed::<SocketAddr>)]
    admin_bind: Option<SocketAddr>,
    /// Seed a small demo set into an empty embedded (SQLite) database at start.
    #[arg(long, env = "FOLIO_DEMO_DATA", default_value = "true", value_parser = boolean, action = ArgAction::Set)]
    demo_data: bool,
    /// Do not seed demo data (overrides FOLIO_DEMO_DATA).
    #[arg(long)]
    no_demo: bool,
    /// Serve GraphiQL on `GET /graphql` to browsers [default: true in development, false in production].
    #[arg(long, env = "FOLIO_GRAPHIQL", value_parser = boolean, action = ArgAction::Set)]
    graphiql: Option<bool>,
    /// Log filter in `tracing` EnvFilter syntax, e.g. `folio=debug,info`.
    #[arg(long, env = "FOLIO_LOG", default_value = "info,sqlx=warn")]
    log: String,
    /// `text` for people, `json` for log pipelines.
    #[arg(
        long,
        env = "FOLIO_LOG_FORMAT",
        default_value = "text",
        ignore_case = true
    )]
    log_format: LogFormat,
}

/// The database.
#[derive(Args, Clone, Debug)]
struct DatabaseSettings {
    /// `sqlite://PATH` (created on first run) or `postgres://USER@HOST:PORT/DB`; picks the backend.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
    database_url: String,
    /// Size of the connection pool.
    #[arg(long, env = "FOLIO_DB_MAX_CONNECTIONS", default_value = "16", value_parser = trimmed::<u32>)]
    db_max_connections: u32,
    /// Read replicas of DATABASE_URL, comma-separated `postgres://` URLs: queries read from them when they have
    /// replayed every write the query's data depends on.
    #[arg(
        long,
        env = "DATABASE_REPLICA_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    database_replica_urls: Vec<String>,
    /// A replica whose replay is further behind than this is skipped (the primary answers).
    #[arg(long, env = "FOLIO_REPLICA_MAX_LAG_MS", default_value = "5000", value_parser = trimmed::<u64>)]
    replica_max_lag_ms: u64,
    /// Longest a request waits for a pooled connection before it gets SERVICE_UNAVAILABLE.
    #[arg(long, env = "FOLIO_DB_ACQUIRE_TIMEOUT_MS", default_value = "3000", value_parser = trimmed::<u64>)]
    db_acquire_timeout_ms: u64,
    /// libpq's TLS mode, honoured by the PostgreSQL driver; any `PGSSL*` setting makes TLS explicit.
    #[arg(long, env = "PGSSLMODE")]
    pgsslmode: Option<String>,
    /// libpq's CA certificate file for verifying the server.
    #[arg(long, env = "PGSSLROOTCERT")]
    pgsslrootcert: Option<String>,
    /// libpq's client certificate file.
    #[arg(long, env = "PGSSLCERT")]
    pgsslcert: Option<String>,
    /// libpq's client key file.
    #[arg(long, env = "PGSSLKEY", hide_env_values = true)]
    pgsslkey: Option<String>,
}

/// The response cache.
#[derive(Args, Clone, Debug)]
struct CacheSettings {
    /// The response cache: `memory`, `redis` or `off` [default: redis if REDIS_URL is set, memory otherwise].
    #[arg(long = "cache", env = "FOLIO_CACHE", ignore_case = true)]
    cache_mode: Option<CacheChoice>,
    /// `redis://[:PASSWORD@]HOST:PORT[/DB]` (or `rediss://`); selects the Redis cache.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Seed nodes of a Redis Cluster, `host:port,host:port,...`; used instead of REDIS_URL.
    #[arg(long, env = "FOLIO_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    redis_cluster_nodes: Vec<String>,
    /// Password of the Redis Cluster's nodes (with REDIS_URL, the password goes in the URL).
    #[arg(long, env = "FOLIO_REDIS_PASSWORD", hide_env_values = true)]
    redis_password: Option<String>,
    /// The longest a response is cached; type and field hints may only shorten it.
    #[arg(long, env = "FOLIO_CACHE_TTL_SECS", default_value = "60", value_parser = trimmed::<u64>)]
    cache_ttl_secs: u64,
    /// Bound of the in-process cache in bytes: bodies, plus 1 KiB per entry and each tag's length plus 32 bytes
    /// for the bookkeeping.
    #[arg(long, env = "FOLIO_CACHE_MAX_BYTES", default_value = "33554432", value_parser = trimmed::<u64>)]
    cache_max_bytes: u64,
    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "FOLIO_CACHE_PREFIX", default_value = "folio:")]
    cache_prefix: String,
    /// Timeout of each Redis call (and of connecting); on timeout the database answers.
    #[arg(long, env = "FOLIO_REDIS_TIMEOUT_MS", default_value = "250", value_parser = trimmed::<u64>)]
    redis_timeout_ms: u64,
}

/// What one request may ask for, and who may call.
#[derive(Args, Clone, Debug)]
struct LimitSettings {
    /// Largest request body (413 over it).
    #[arg(long, env = "FOLIO_MAX_BODY_BYTES", default_value = "1048576", value_parser = trimmed::<usize>)]
    max_body_bytes: usize,
    /// Largest GraphQL document.
    #[arg(long, env = "FOLIO_MAX_DOCUMENT_BYTES", default_value = "65536", value_parser = trimmed::<usize>)]
    max_document_bytes: usize,
    /// Most lexical tokens in a document.
    #[arg(long, env = "FOLIO_MAX_TOKENS", default_value = "5000", value_parser = trimmed::<usize>)]
    max_tokens: usize,
    /// Most aliased fields in a document.
    #[arg(long, env = "FOLIO_MAX_ALIASES", default_value = "30", value_parser = trimmed::<usize>)]
    max_aliases: usize,
    /// Most root fields in the operation.
    #[arg(long, env = "FOLIO_MAX_ROOT_FIELDS", default_value = "20", value_parser = trimmed::<usize>)]
    max_root_fields: usize,
    /// Most directives on one field.
    #[arg(long, env = "FOLIO_MAX_DIRECTIVES", default_value = "5", value_parser = trimmed::<usize>)]
    max_directives: usize,
    /// Deepest selection nesting an operation may have.
    #[arg(long, env = "FOLIO_MAX_DEPTH", default_value = "12", value_parser = trimmed::<usize>)]
    max_depth: usize,
    /// Highest complexity an operation may have (each field 1; a connection's subtree `first` times).
    #[arg(long, env = "FOLIO_MAX_COMPLEXITY", default_value = "20000", value_parser = trimmed::<usize>)]
    max_complexity: usize,
    /// Longest a GraphQL execution may run (504 TIMEOUT after that).
    #[arg(long, env = "FOLIO_REQUEST_TIMEOUT_MS", default_value = "10000", value_parser = trimmed::<u64>)]
    request_timeout_ms: u64,
    /// Browser origins allowed to call: a comma-separated list, `*` or `none` [default: any in development, none
    /// in production].
    #[arg(long, env = "FOLIO_CORS_ORIGINS")]
    cors_origins: Option<String>,
    /// Serve `__schema` and `__type` [default: true in development, false in production].
    #[arg(long, env = "FOLIO_INTROSPECTION", value_parser = boolean, action = ArgAction::Set)]
    introspection: Option<bool>,
    /// Reverse proxies in front of Folio; the client address is read that far from the right of X-Forwarded-For.
    #[arg(long, env = "FOLIO_TRUSTED_PROXIES", default_value = "0", value_parser = trimmed::<usize>)]
    trusted_proxies: usize,
    /// GraphQL requests per minute per user or client address; 0 turns it off [default: 1200 in production, 0 in
    /// development].
    #[arg(long, env = "FOLIO_RATE_LIMIT_PER_MIN", value_parser = trimmed::<u32>)]
    rate_limit_per_min: Option<u32>,
    /// Requests a caller may make at once before the rate applies.
    #[arg(long, env = "FOLIO_RATE_LIMIT_BURST", default_value = "120", value_parser = trimmed::<u32>)]
    rate_limit_burst: u32,
    /// `login` attempts per email from one client address in 15 minutes (5x that per address over all emails; 3x per email per hour over every address it has not signed in from).
    #[arg(long, env = "FOLIO_LOGIN_ATTEMPTS_PER_15MIN", default_value = "10", value_parser = trimmed::<u32>)]
    login_attempts_per_15min: u32,
    /// `signUp` calls per client address in an hour; 0: no limit.
    #[arg(long, env = "FOLIO_SIGNUPS_PER_HOUR", default_value = "20", value_parser = trimmed::<u32>)]
    signups_per_hour: u32,
}

/// Bearer tokens: Folio's own and an external identity provider's.
#[derive(Args, Clone, Debug)]
struct AuthSettings {
    /// HS256 key of Folio's own tokens, at least 32 bytes; required in production and on non-loopback addresses.
    #[arg(long, env = "FOLIO_JWT_SECRET", hide_env_values = true, value_parser = secret)]
    jwt_secret: Option<SecretString>,
    /// A secret the federation gateway sends in `X-Folio-Gateway-Secret`: with introspection off, only it gets the SDL (`_service`, `GET /schema.graphql`).
    #[arg(long, env = "FOLIO_GATEWAY_SECRET", hide_env_values = true, value_parser = secret)]
    gateway_secret: Option<SecretString>,
    /// `iss` of Folio's own tokens.
    #[arg(long, env = "FOLIO_TOKEN_ISSUER", default_value = "folio")]
    token_issuer: String,
    /// `aud` of Folio's own tokens.
    #[arg(long, env = "FOLIO_TOKEN_AUDIENCE", default_value = "folio")]
    token_audience: String,
    /// Lifetime of the tokens `signUp`, `login` and `folio token` hand out.
    #[arg(long, env = "FOLIO_TOKEN_TTL_SECS", default_value = "3600", value_parser = trimmed::<u64>)]
    token_ttl_secs: u64,
    /// Clock skew tolerated on `exp` and `nbf`, at most 60.
    #[arg(long, env = "FOLIO_JWT_LEEWAY_SECS", default_value = "30", value_parser = trimmed::<u64>)]
    jwt_leeway_secs: u64,
    /// An external identity provider's JWKS URL (with FOLIO_JWT_ISSUER and FOLIO_JWT_AUDIENCE).
    #[arg(long, env = "FOLIO_JWKS_URL")]
    jwks_url: Option<String>,
    /// The external provider's `iss`, exactly as in its tokens.
    #[arg(long, env = "FOLIO_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// The `aud` the external provider's tokens must carry for Folio.
    #[arg(long, env = "FOLIO_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// A claim of the external tokens whose value (USER/ADMIN) sets the user's role; unset: roles live in Folio.
    #[arg(long, env = "FOLIO_JWT_ROLE_CLAIM")]
    jwt_role_claim: Option<String>,
    /// Least time between two JWKS fetches triggered by unknown `kid`s.
    #[arg(long, env = "FOLIO_JWKS_MIN_REFRESH_SECS", default_value = "30", value_parser = trimmed::<u64>)]
    jwks_min_refresh_secs: u64,
}

/// Persisted documents.
#[derive(Args, Clone, Debug)]
struct DocumentSettings {
    /// Which documents run: `open` (any; APQ registers them), `apq` (APQ and manifest documents), `safelist` (manifest documents only) or `log` (any, unknown ones counted and logged) [default: safelist in production with a manifest, open otherwise].
    #[arg(long = "documents", env = "FOLIO_DOCUMENTS", ignore_case = true)]
    documents_mode: Option<DocumentMode>,
    /// Trusted-document manifests, comma-separated: Apollo's persisted-query-manifest.json, graphql-codegen's persisted-documents.json or Relay's persisted_queries.json.
    #[arg(long = "documents-manifest", env = "FOLIO_DOCUMENTS_MANIFEST")]
    documents_manifest: Option<String>,
    /// Largest estimated cost (from the schema's @cost and @listSize) an operation may have; 0: no limit.
    #[arg(long, env = "FOLIO_MAX_COST", default_value = "0", value_parser = trimmed::<u64>)]
    max_cost: u64,
    /// Put `extensions.cost.estimated` in every response [default: true in development, false in production].
    #[arg(long, env = "FOLIO_COST_EXTENSION", value_parser = boolean, action = ArgAction::Set)]
    cost_extension: Option<bool>,
}

/// `FOLIO_DOCUMENTS`: which documents may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DocumentMode {
    Open,
    Apq,
    Safelist,
    Log,
}

/// Persisted documents and cost (see `operation::persisted` and `operation::cost`).
#[derive(Clone, Debug)]
pub struct DocumentConfig {
    pub mode: DocumentMode,
    /// Manifest files to load at start.
    pub manifests: Vec<std::path::PathBuf>,
    /// The largest estimated cost an operation may have; `None`: no limit.
    pub max_cost: Option<u64>,
    /// Every response carries `extensions.cost.estimated`.
    pub cost_extension: bool,
}

/// The Stripe webhook.
#[derive(Args, Clone, Debug)]
struct BillingSettings {
    /// The Stripe webhook endpoint's signing secrets (`whsec_...`), comma-separated; unset: the webhook answers 503.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true, value_parser = secret)]
    stripe_webhook_secret: Option<SecretString>,
    /// How far a webhook signature's timestamp may be from the server's clock; must be positive.
    #[arg(long, env = "STRIPE_WEBHOOK_TOLERANCE_SECS", default_value = "300", value_parser = trimmed::<u64>)]
    stripe_webhook_tolerance_secs: u64,
}

/// Subscriptions and live queries over WebSocket and server-sent events.
#[derive(Args, Clone, Debug)]
struct LiveSettings {
    /// How long a WebSocket may wait before sending `connection_init`; then it is closed with 4408.
    #[arg(long, env = "FOLIO_WS_INIT_TIMEOUT_MS", default_value = "3000", value_parser = trimmed::<u64>)]
    ws_init_timeout_ms: u64,
    /// Subscriptions and live queries one WebSocket may run at once; past it a subscribe gets `TOO_MANY_SUBSCRIPTIONS`.
    #[arg(long, env = "FOLIO_WS_MAX_SUBSCRIPTIONS", default_value = "100", value_parser = trimmed::<usize>)]
    ws_max_subscriptions: usize,
    /// Subscriptions and live queries one instance runs at once, over every transport.
    #[arg(long, env = "FOLIO_LIVE_MAX_SUBSCRIPTIONS", default_value = "50000", value_parser = trimmed::<usize>)]
    live_max_subscriptions: usize,
    /// Messages waiting to be written to one WebSocket or event stream; a client that falls further behind is disconnected (4500).
    #[arg(long, env = "FOLIO_LIVE_QUEUE", default_value = "256", value_parser = trimmed::<usize>)]
    live_queue: usize,
    /// Load GraphiQL's scripts and styles from this CDN base URL instead of Folio's own copy (e.g. `https://unpkg.com`).
    #[arg(long, env = "FOLIO_GRAPHIQL_CDN")]
    graphiql_cdn: Option<String>,
}

/// Live data (see `live` and `http::live`).
#[derive(Clone, Debug)]
pub struct LiveConfig {
    pub ws_init_timeout: Duration,
    pub ws_max_subscriptions: usize,
    pub max_subscriptions: usize,
    pub queue: usize,
    /// Where GraphiQL's assets come from: `None` for Folio's own copy.
    pub graphiql_cdn: Option<String>,
}

/// Completes the declarations of `command` (a command with `Settings` flattened in): every setting global, and
/// its value named after its environment variable.
pub fn declare(command: clap::Command) -> clap::Command {
    command.mut_args(|arg| {
        let named = match arg.get_env() {
            Some(env) => {
                let name = env.to_string_lossy().into_owned();
                arg.value_name(name)
            }
            None => arg,
        };
        named.global(true)
    })
}

/// A value with surrounding whitespace trimmed, parsed as `T`.
fn trimmed<T: FromStr>(raw: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    raw.trim().parse().map_err(|e: T::Err| e.to_string())
}

fn boolean(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// Secrets go straight into `secrecy` types, which never print their contents.
fn secret(raw: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(raw))
}

/// How bearer tokens are issued and verified (see `auth`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// HS256 key of Folio's own tokens. `None` in development only: a fixed, clearly named development secret
    /// is used instead.
    pub jwt_secret: Option<SecretString>,
    pub token_issuer: String,
    pub token_audience: String,
    pub token_ttl: Duration,
    /// Clock skew tolerated on `exp` and `nbf`, at most `MAX_LEEWAY_SECS`.
    pub leeway_secs: u64,
    /// An external identity provider whose RS256/ES256 tokens are accepted too.
    pub external: Option<ExternalIdp>,
}

/// `FOLIO_JWKS_URL` + `FOLIO_JWT_ISSUER` + `FOLIO_JWT_AUDIENCE`: all three or none.
#[derive(Clone, Debug)]
pub struct ExternalIdp {
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// A claim whose value (`USER`/`ADMIN`) sets the user's role. Unset: roles are managed in Folio only and
    /// never taken from an external token.
    pub role_claim: Option<String>,
    /// The least time between two JWKS fetches caused by unknown `kid`s, so a flood of made-up key ids cannot
    /// hammer the provider.
    pub min_refresh: Duration,
}

/// The most clock skew accepted on token times.
pub const MAX_LEEWAY_SECS: u64 = 60;

impl Default for AuthConfig {
    fn default() -> Self {
        Config::default().auth
    }
}

/// Limits and policies of the edge: what one request may ask for, and who may call.
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    pub max_body_bytes: usize,
    pub max_document_bytes: usize,
    pub max_tokens: usize,
    pub max_aliases: usize,
    pub max_root_fields: usize,
    pub max_directives: usize,
    pub request_timeout: Duration,
    /// Origins allowed to call from a browser; `*` for any, empty for none.
    pub cors_origins: Vec<String>,
    pub introspection: bool,
    /// How many reverse proxies in front of Folio append to `X-Forwarded-For`.
    pub trusted_proxies: usize,
    /// Sustained GraphQL requests per minute per caller; 0: off.
    pub rate_per_min: u32,
    pub rate_burst: u32,
    pub login_attempts: u32,
    /// `signUp` calls per client address per hour; 0: off.
    pub signups_per_hour: u32,
    /// What only the federation gateway may present (see `reveals_sdl`).
    pub gateway_secret: Option<SecretString>,
    /// `/metrics` on the public listener: in development without `FOLIO_ADMIN_BIND` only.
    pub public_metrics: bool,
}

impl EdgeConfig {
    /// The one rule for who may read the schema's definition (`_service { sdl }`, `GET /schema.graphql`):
    /// everyone while introspection is on (`FOLIO_INTROSPECTION`), otherwise only a caller presenting
    /// `FOLIO_GATEWAY_SECRET` in `X-Folio-Gateway-Secret` (and the admin listener, which serves it to anyone who
    /// can reach it). Introspection itself and validation suggestions follow `introspection`.
    pub fn reveals_sdl(&self, presented: Option<&[u8]>) -> bool {
        use secrecy::ExposeSecret;
        use sha2::{Digest, Sha256};
        if self.introspection {
            return true;
        }
        match (&self.gateway_secret, presented) {
            // Digests compared: equal lengths, and no early exit on the secret's own bytes.
            (Some(secret), Some(presented)) => {
                Sha256::digest(secret.expose_secret().as_bytes()) == Sha256::digest(presented)
            }
            _ => false,
        }
    }
}

/// The Stripe billing webhook (`POST /api/webhooks/stripe`, see `billing`).
#[derive(Clone, Debug)]
pub struct StripeConfig {
    /// The endpoint's signing secrets. Several are accepted so a rolled secret keeps working while Stripe signs
    /// with both. Empty: the webhook answers 503.
    pub webhook_secrets: Vec<SecretString>,
    /// How far a signature's timestamp may lie from now, in either direction, which bounds how long a captured
    /// request can be replayed.
    pub tolerance_secs: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Config::default().stripe
    }
}

/// The typed configuration (see the module header).
#[derive(Clone, Debug)]
pub struct Config {
    pub env: Environment,
    pub bind: SocketAddr,
    /// The operators-only listener (`FOLIO_ADMIN_BIND`).
    pub admin_bind: Option<SocketAddr>,
    pub database_url: String,
    pub db_max_connections: u32,
    pub db_acquire_timeout: Duration,
    /// Read replicas (`DATABASE_REPLICA_URLS`, `FOLIO_REPLICA_MAX_LAG_MS`).
    pub replicas: ReplicaConfig,
    /// A `PGSSL*` variable is set: TLS to PostgreSQL is explicit even if the URL says nothing of it.
    pub pg_tls_from_env: bool,
    pub demo_data: bool,
    pub max_depth: usize,
    pub max_complexity: usize,
    pub graphiql: bool,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub auth: AuthConfig,
    pub cache: CacheConfig,
    pub edge: EdgeConfig,
    pub stripe: StripeConfig,
    pub documents: DocumentConfig,
    pub live: LiveConfig,
    pub tracing: TracingConfig,
}

/// Which backend, from `FOLIO_CACHE` / `REDIS_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheMode {
    Off,
    Memory,
    Redis,
}

/// Cache settings (see `Config`).
#[derive(Clone, Debug)]
pub struct CacheConfig {
    pub mode: CacheMode,
    /// Where Redis is (`REDIS_URL` or `FOLIO_REDIS_CLUSTER_NODES`); secrets are never in logs or debug output.
    pub redis: Option<RedisTarget>,
    pub max_bytes: u64,
    pub prefix: String,
    pub redis_timeout: Duration,
    /// The longest a response is cached (`FOLIO_CACHE_TTL_SECS`); type and field hints may only shorten it.
    pub ttl: Duration,
}

/// Traces over OTLP (`OTEL_*`); off when `endpoint` is `None`.
#[derive(Clone, Debug, Default)]
pub struct TracingConfig {
    pub endpoint: Option<String>,
    pub service_name: String,
    pub sampler: TraceSampler,
    /// `graphql.document` on operation spans (`FOLIO_TRACE_DOCUMENTS`).
    pub documents: bool,
}

/// `OTEL_TRACES_SAMPLER` with its argument.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum TraceSampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    #[default]
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

/// Read replicas: where queries may read (see `replicas`).
#[derive(Clone, Debug, Default)]
pub struct ReplicaConfig {
    /// May hold passwords: never logged.
    pub urls: Vec<SecretString>,
    pub max_lag: Duration,
}

/// How to open the database pool (see `Store::connect`).
#[derive(Clone, Debug)]
pub struct DatabaseOptions {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    /// A `PGSSL*` variable is set, which the PostgreSQL driver honours: TLS is explicit.
    pub tls_from_env: bool,
}

impl DatabaseOptions {
    /// A pool of `max_connections` for `url`, TLS as the URL says.
    pub fn new(url: &str, max_connections: u32, acquire_timeout: Duration) -> Self {
        Self {
            url: url.to_owned(),
            max_connections,
            acquire_timeout,
            tls_from_env: false,
        }
    }
}

/// The default SQLite location: a file in the working directory, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://folio.db";

/// The declared defaults, as `folio` with no flags and an empty environment gets them.
impl Default for Config {
    fn default() -> Self {
        match Self::from_lookup(|_| None) {
            Ok(config) => config,
            // The declarations' own defaults are checked by a unit test; this cannot happen in a release.
            Err(err) => panic!("the declared defaults do not parse: {err:#}"),
        }
    }
}

impl Config {
    /// Reads the process environment (after `.env`, loaded by `main`), without command-line flags.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a config from any name → value lookup in place of the environment; tests pass a map. Empty values
    /// count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let declared = settings_command();
        let mut argv = vec!["folio".to_owned()];
        for arg in declared.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            if let Some(value) = env.to_str().and_then(&get).filter(|v| !v.trim().is_empty()) {
                argv.push(format!("--{long}={value}"));
            }
        }
        // The lookup stands in for the environment: clap must not read the real one.
        let command = declared.mut_args(|arg| arg.env(None));
        let matches = command
            .try_get_matches_from(argv)
            .map_err(|e| anyhow::anyhow!("{}", e.render().to_string().trim()))?;
        Self::from_settings(Settings::from_arg_matches(&matches)?)
    }

    /// Checks and types `settings`.
    pub fn from_settings(s: Settings) -> anyhow::Result<Self> {
        let production = s.server.env == Environment::Production;
        Ok(Self {
            env: s.server.env,
            bind: s.server.bind,
            admin_bind: s.server.admin_bind,
            database_url: non_empty(Some(s.database.database_url.clone()))
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            db_max_connections: s.database.db_max_connections,
            db_acquire_timeout: Duration::from_millis(s.database.db_acquire_timeout_ms),
            replicas: replicas_from(&s)?,
            pg_tls_from_env: [
                &s.database.pgsslmode,
                &s.database.pgsslrootcert,
                &s.database.pgsslcert,
                &s.database.pgsslkey,
            ]
            .iter()
            .any(|v| v.is_some()),
            demo_data: s.server.demo_data && !s.server.no_demo,
            max_depth: s.limits.max_depth,
            max_complexity: s.limits.max_complexity,
            // Production serves no playground unless asked to.
            graphiql: s.server.graphiql.unwrap_or(!production),
            log_filter: s.server.log.clone(),
            log_format: s.server.log_format,
            auth: auth_from(&s)?,
            cache: cache_from(&s)?,
            edge: edge_from(&s, production)?,
            stripe: stripe_from(&s)?,
            documents: documents_from(&s, production)?,
            live: live_from(&s)?,
            tracing: tracing_from(&s)?,
        })
    }

    /// Checks what serving (and minting tokens) needs beyond well-formed values: in production the token
    /// secret must be set. Other commands (`migrate`, `schema`, `seed`) do not need it.
    pub fn check_for_serving(&self) -> anyhow::Result<()> {
        // Without a secret, tokens are signed with the public development secret: anyone could forge one. That
        // is only acceptable on a loopback address, whatever FOLIO_ENV says.
        if self.auth.jwt_secret.is_none() && !self.bind.ip().is_loopback() {
            bail!(
                "FOLIO_JWT_SECRET must be set to serve on {} (a non-loopback address): without it tokens are \
                 signed with the public development secret",
                self.bind
            );
        }
        if self.env == Environment::Production && self.auth.jwt_secret.is_none() {
            bail!(
                "FOLIO_JWT_SECRET must be set when FOLIO_ENV=production (at least 32 random bytes, \
                 e.g. `openssl rand -base64 48`)"
            );
        }
        Ok(())
    }

    /// What the store needs to open its pool.
    pub fn database(&self) -> DatabaseOptions {
        DatabaseOptions {
            url: self.database_url.clone(),
            max_connections: self.db_max_connections,
            acquire_timeout: self.db_acquire_timeout,
            tls_from_env: self.pg_tls_from_env,
        }
    }

    /// The backend `database_url` names.
    pub fn database_kind(&self) -> anyhow::Result<DatabaseKind> {
        database_kind(&self.database_url)
    }
}

/// The declared settings as a clap command (for `from_lookup`, `--help` and the README check).
pub fn settings_command() -> clap::Command {
    declare(Settings::augment_args(clap::Command::new("folio")))
}

/// The environment variables the settings are read from, in declaration order.
pub fn setting_variables() -> Vec<String> {
    settings_command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .filter_map(|e| e.to_str().map(str::to_owned))
        .collect()
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// Classifies a database URL by its scheme.
pub fn database_kind(url: &str) -> anyhow::Result<DatabaseKind> {
    if url.starts_with("sqlite:") {
        Ok(DatabaseKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(DatabaseKind::Postgres)
    } else {
        bail!("DATABASE_URL must start with sqlite: or postgres:// (got a URL with another scheme)")
    }
}

fn edge_from(s: &Settings, production: bool) -> anyhow::Result<EdgeConfig> {
    let cors_origins = match non_empty(s.limits.cors_origins.clone()) {
        Some(v) if v.eq_ignore_ascii_case("none") => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>(),
        None if production => Vec::new(),
        None => vec!["*".to_owned()],
    };
    for origin in &cors_origins {
        if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
            bail!("FOLIO_CORS_ORIGINS has an invalid origin `{origin}`");
        }
    }
    Ok(EdgeConfig {
        max_body_bytes: s.limits.max_body_bytes,
        max_document_bytes: s.limits.max_document_bytes,
        max_tokens: s.limits.max_tokens,
        max_aliases: s.limits.max_aliases,
        max_root_fields: s.limits.max_root_fields,
        max_directives: s.limits.max_directives,
        request_timeout: Duration::from_millis(s.limits.request_timeout_ms),
        cors_origins,
        introspection: s.limits.introspection.unwrap_or(!production),
        trusted_proxies: s.limits.trusted_proxies,
        // On by default in production only: in development one address (a laptop, a load test) is everyone.
        rate_per_min: s
            .limits
            .rate_limit_per_min
            .unwrap_or(if production { 1_200 } else { 0 }),
        rate_burst: s.limits.rate_limit_burst.max(1),
        login_attempts: s.limits.login_attempts_per_15min.max(1),
        signups_per_hour: s.limits.signups_per_hour,
        gateway_secret: s.auth.gateway_secret.clone(),
        public_metrics: s.server.admin_bind.is_none() && !production,
    })
}

fn tracing_from(s: &Settings) -> anyhow::Result<TracingConfig> {
    let t = &s.tracing;
    let protocol = t.otlp_protocol.trim();
    if protocol != "http/protobuf" {
        bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not supported: Folio speaks http/protobuf"
        );
    }
    let ratio = t.traces_sampler_arg;
    if !(0.0..=1.0).contains(&ratio) {
        bail!("OTEL_TRACES_SAMPLER_ARG must be between 0 and 1 (got {ratio})");
    }
    let sampler = match t.traces_sampler.trim() {
        "always_on" => TraceSampler::AlwaysOn,
        "always_off" => TraceSampler::AlwaysOff,
        "traceidratio" => TraceSampler::Ratio(ratio),
        "parentbased_always_on" => TraceSampler::ParentBasedAlwaysOn,
        "parentbased_always_off" => TraceSampler::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => TraceSampler::ParentBasedRatio(ratio),
        other => bail!(
            "OTEL_TRACES_SAMPLER={other} is not one of always_on, always_off, traceidratio, \
             parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
        ),
    };
    Ok(TracingConfig {
        endpoint: non_empty(t.otlp_endpoint.clone()),
        service_name: non_empty(Some(t.service_name.clone())).unwrap_or_else(|| "folio".to_owned()),
        sampler,
        documents: t.trace_documents,
    })
}

fn replicas_from(s: &Settings) -> anyhow::Result<ReplicaConfig> {
    let urls: Vec<String> = s
        .database
        .database_replica_urls
        .iter()
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .collect();
    if !urls.is_empty() {
        let primary = non_empty(Some(s.database.database_url.clone()))
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if database_kind(&primary)? != DatabaseKind::Postgres {
            bail!("DATABASE_REPLICA_URLS needs a PostgreSQL DATABASE_URL (SQLite has no replicas)");
        }
        if urls
            .iter()
            .any(|u| !matches!(database_kind(u), Ok(DatabaseKind::Postgres)))
        {
            bail!("DATABASE_REPLICA_URLS must be postgres:// URLs");
        }
    }
    Ok(ReplicaConfig {
        urls: urls.into_iter().map(SecretString::from).collect(),
        max_lag: Duration::from_millis(s.database.replica_max_lag_ms),
    })
}

fn cache_from(s: &Settings) -> anyhow::Result<CacheConfig> {
    let nodes: Vec<String> = s
        .cache
        .redis_cluster_nodes
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let password = non_empty(s.cache.redis_password.clone());
    let redis = if !nodes.is_empty() {
        Some(RedisTarget::Cluster {
            nodes,
            password: password.map(SecretString::from),
        })
    } else if password.is_some() {
        bail!(
            "FOLIO_REDIS_PASSWORD is the password of FOLIO_REDIS_CLUSTER_NODES, which is not set; \
             with REDIS_URL, put the password in the URL"
        );
    } else {
        non_empty(s.cache.redis_url.clone()).map(|url| RedisTarget::Url(SecretString::from(url)))
    };
    let mode = match s.cache.cache_mode {
        None if redis.is_some() => CacheMode::Redis,
        None | Some(CacheChoice::Memory) => CacheMode::Memory,
        Some(CacheChoice::Redis) => CacheMode::Redis,
        Some(CacheChoice::Off) => CacheMode::Off,
    };
    if mode == CacheMode::Redis && redis.is_none() {
        bail!("FOLIO_CACHE=redis needs REDIS_URL or FOLIO_REDIS_CLUSTER_NODES");
    }
    Ok(CacheConfig {
        mode,
        redis,
        max_bytes: s.cache.cache_max_bytes,
        prefix: s.cache.cache_prefix.clone(),
        redis_timeout: Duration::from_millis(s.cache.redis_timeout_ms.max(1)),
        ttl: Duration::from_secs(s.cache.cache_ttl_secs),
    })
}

fn auth_from(s: &Settings) -> anyhow::Result<AuthConfig> {
    use secrecy::ExposeSecret;
    let jwt_secret = s
        .auth
        .jwt_secret
        .clone()
        .filter(|secret| !secret.expose_secret().is_empty());
    if let Some(secret) = &jwt_secret
        && secret.expose_secret().len() < 32
    {
        bail!(
            "FOLIO_JWT_SECRET must be at least 32 bytes long (it is {})",
            secret.expose_secret().len()
        )
    }
    if s.auth.jwt_leeway_secs > MAX_LEEWAY_SECS {
        bail!(
            "FOLIO_JWT_LEEWAY_SECS may be at most {MAX_LEEWAY_SECS}, not {}",
            s.auth.jwt_leeway_secs
        );
    }
    if s.auth.token_ttl_secs == 0 {
        bail!("FOLIO_TOKEN_TTL_SECS must be positive");
    }
    let external = match (
        non_empty(s.auth.jwks_url.clone()),
        non_empty(s.auth.jwt_issuer.clone()),
        non_empty(s.auth.jwt_audience.clone()),
    ) {
        (None, None, None) => None,
        (Some(jwks_url), Some(issuer), Some(audience)) => Some(ExternalIdp {
            jwks_url,
            issuer,
            audience,
            role_claim: non_empty(s.auth.jwt_role_claim.clone()),
            min_refresh: Duration::from_secs(s.auth.jwks_min_refresh_secs),
        }),
        (url, iss, aud) => {
            let missing: Vec<&str> = [
                ("FOLIO_JWKS_URL", url.is_none()),
                ("FOLIO_JWT_ISSUER", iss.is_none()),
                ("FOLIO_JWT_AUDIENCE", aud.is_none()),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect();
            bail!(
                "an external identity provider needs FOLIO_JWKS_URL, FOLIO_JWT_ISSUER and \
                 FOLIO_JWT_AUDIENCE together; missing: {}",
                missing.join(", ")
            )
        }
    };
    Ok(AuthConfig {
        jwt_secret,
        token_issuer: s.auth.token_issuer.clone(),
        token_audience: s.auth.token_audience.clone(),
        token_ttl: Duration::from_secs(s.auth.token_ttl_secs),
        leeway_secs: s.auth.jwt_leeway_secs,
        external,
    })
}

fn documents_from(s: &Settings, production: bool) -> anyhow::Result<DocumentConfig> {
    let d = &s.documents;
    let manifests: Vec<std::path::PathBuf> = non_empty(d.documents_manifest.clone())
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from)
                .collect()
        })
        .unwrap_or_default();
    let mode = match d.documents_mode {
        Some(mode) => mode,
        None if production && !manifests.is_empty() => DocumentMode::Safelist,
        None => DocumentMode::Open,
    };
    if mode == DocumentMode::Safelist && manifests.is_empty() {
        bail!("FOLIO_DOCUMENTS=safelist needs FOLIO_DOCUMENTS_MANIFEST (the documents it allows)");
    }
    Ok(DocumentConfig {
        mode,
        manifests,
        max_cost: (d.max_cost > 0).then_some(d.max_cost),
        cost_extension: d.cost_extension.unwrap_or(!production),
    })
}

fn live_from(s: &Settings) -> anyhow::Result<LiveConfig> {
    let l = &s.live;
    if l.ws_max_subscriptions == 0 || l.live_max_subscriptions == 0 || l.live_queue == 0 {
        bail!(
            "FOLIO_WS_MAX_SUBSCRIPTIONS, FOLIO_LIVE_MAX_SUBSCRIPTIONS and FOLIO_LIVE_QUEUE must be at least 1"
        );
    }
    let graphiql_cdn =
        non_empty(l.graphiql_cdn.clone()).map(|u| u.trim_end_matches('/').to_owned());
    if let Some(url) = &graphiql_cdn
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        bail!("FOLIO_GRAPHIQL_CDN must be an http(s) URL (got `{url}`)");
    }
    Ok(LiveConfig {
        ws_init_timeout: Duration::from_millis(l.ws_init_timeout_ms.max(1)),
        ws_max_subscriptions: l.ws_max_subscriptions,
        max_subscriptions: l.live_max_subscriptions,
        queue: l.live_queue,
        graphiql_cdn,
    })
}

fn stripe_from(s: &Settings) -> anyhow::Result<StripeConfig> {
    use secrecy::ExposeSecret;
    let webhook_secrets = s
        .billing
        .stripe_webhook_secret
        .as_ref()
        .map(|raw| {
            raw.expose_secret()
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(SecretString::from)
                .collect()
        })
        .unwrap_or_default();
    if s.billing.stripe_webhook_tolerance_secs == 0 {
        // Zero would refuse nearly every delivery (network latency alone exceeds it), silently.
        bail!("STRIPE_WEBHOOK_TOLERANCE_SECS must be positive");
    }
    Ok(StripeConfig {
        webhook_secrets,
        tolerance_secs: s.billing.stripe_webhook_tolerance_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn with(vars: &[(&str, &str)]) -> anyhow::Result<Config> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn empty_environment_gives_the_embedded_defaults() {
        let c = with(&[]).unwrap();
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(c.database_kind().unwrap(), DatabaseKind::Sqlite);
        assert_eq!(c.bind.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = with(&[("FOLIO_DB_MAX_CONNECTIONS", "many")]).unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_DB_MAX_CONNECTIONS"));
        let err = with(&[("FOLIO_DEMO_DATA", "perhaps")]).unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_DEMO_DATA"));
    }

    #[test]
    fn postgres_urls_pick_postgres() {
        let c = with(&[
            ("DATABASE_URL", "postgres://u@h/db"),
            ("FOLIO_BIND", "0.0.0.0:9000"),
        ])
        .unwrap();
        assert_eq!(c.database_kind().unwrap(), DatabaseKind::Postgres);
        assert_eq!(c.bind.port(), 9000);
        assert!(database_kind("mysql://x").is_err());
    }

    #[test]
    fn production_needs_a_long_enough_secret() {
        let c = with(&[("FOLIO_ENV", "production")]).unwrap();
        let err = c.check_for_serving().unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_JWT_SECRET"));
        let err = with(&[("FOLIO_JWT_SECRET", "short")]).unwrap_err();
        assert!(format!("{err:#}").contains("at least 32 bytes"));
        let secret = "0123456789abcdef0123456789abcdef";
        let c = with(&[("FOLIO_ENV", "production"), ("FOLIO_JWT_SECRET", secret)]).unwrap();
        c.check_for_serving().unwrap();
        // The secret never shows up in debug output (which is what ends up in logs).
        assert!(!format!("{c:?}").contains(secret));
    }

    #[test]
    fn stripe_secrets_are_a_list_and_never_shown() {
        let c = with(&[]).unwrap();
        assert!(c.stripe.webhook_secrets.is_empty());
        assert_eq!(c.stripe.tolerance_secs, 300);
        let c = with(&[
            (
                "STRIPE_WEBHOOK_SECRET",
                " whsec_old_value , whsec_new_value,",
            ),
            ("STRIPE_WEBHOOK_TOLERANCE_SECS", "60"),
        ])
        .unwrap();
        use secrecy::ExposeSecret;
        let secrets: Vec<&str> = c
            .stripe
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret())
            .collect();
        assert_eq!(secrets, ["whsec_old_value", "whsec_new_value"]);
        assert_eq!(c.stripe.tolerance_secs, 60);
        let shown = format!("{c:?}");
        assert!(!shown.contains("whsec_old_value") && !shown.contains("whsec_new_value"));
        let err = with(&[("STRIPE_WEBHOOK_TOLERANCE_SECS", "0")]).unwrap_err();
        assert!(format!("{err:#}").contains("STRIPE_WEBHOOK_TOLERANCE_SECS"));
        let err = with(&[("STRIPE_WEBHOOK_TOLERANCE_SECS", "five")]).unwrap_err();
        assert!(format!("{err:#}").contains("STRIPE_WEBHOOK_TOLERANCE_SECS"));
    }

    #[test]
    fn the_development_secret_is_for_loopback_only() {
        let local = with(&[]).unwrap();
        local.check_for_serving().unwrap();
        let exposed = with(&[("FOLIO_BIND", "0.0.0.0:8000")]).unwrap();
        let err = exposed.check_for_serving().unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_JWT_SECRET"));
        let secret = "0123456789abcdef0123456789abcdef";
        let ok = with(&[("FOLIO_BIND", "0.0.0.0:8000"), ("FOLIO_JWT_SECRET", secret)]).unwrap();
        ok.check_for_serving().unwrap();
    }

    #[test]
    fn the_declared_defaults_parse() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.db_max_connections, 16);
        assert_eq!(c.edge.rate_per_min, 0, "rate limits are off in development");
        let p = with(&[("FOLIO_ENV", "production")]).unwrap();
        assert_eq!(p.edge.rate_per_min, 1_200);
        assert!(!p.graphiql && !p.edge.introspection && p.edge.cors_origins.is_empty());
    }

    #[test]
    fn the_readme_table_names_exactly_the_declared_variables() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Configuration section");
        let documented: std::collections::BTreeSet<String> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
            .collect();
        let declared: std::collections::BTreeSet<String> =
            setting_variables().into_iter().collect();
        assert_eq!(documented, declared, "README table vs declared settings");
    }

    #[test]
    fn help_lists_every_variable() {
        let help = settings_command().render_long_help().to_string();
        for name in setting_variables() {
            assert!(
                help.contains(&format!("env: {name}")),
                "{name} missing from --help"
            );
        }
    }

    #[test]
    fn production_with_a_manifest_runs_a_safelist() {
        assert_eq!(with(&[]).unwrap().documents.mode, DocumentMode::Open);
        let p = with(&[("FOLIO_ENV", "production")]).unwrap();
        assert_eq!(p.documents.mode, DocumentMode::Open);
        assert!(!p.documents.cost_extension && p.documents.max_cost.is_none());
        let p = with(&[
            ("FOLIO_ENV", "production"),
            ("FOLIO_DOCUMENTS_MANIFEST", "a.json, b.json"),
        ])
        .unwrap();
        assert_eq!(p.documents.mode, DocumentMode::Safelist);
        assert_eq!(p.documents.manifests.len(), 2);
        let err = with(&[("FOLIO_DOCUMENTS", "safelist")]).unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_DOCUMENTS_MANIFEST"));
        let c = with(&[("FOLIO_DOCUMENTS", "LOG"), ("FOLIO_MAX_COST", "500")]).unwrap();
        assert_eq!(c.documents.mode, DocumentMode::Log);
        assert_eq!(c.documents.max_cost, Some(500));
    }

    #[test]
    fn a_pgssl_variable_makes_tls_explicit() {
        assert!(!with(&[]).unwrap().pg_tls_from_env);
        assert!(with(&[("PGSSLMODE", "require")]).unwrap().pg_tls_from_env);
    }

    #[test]
    fn external_idp_settings_come_together_and_leeway_is_capped() {
        let err = with(&[("FOLIO_JWKS_URL", "https://idp/jwks")]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("FOLIO_JWT_ISSUER") && msg.contains("FOLIO_JWT_AUDIENCE"));
        let err = with(&[("FOLIO_JWT_LEEWAY_SECS", "61")]).unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_JWT_LEEWAY_SECS"));
    }
}
