//! Typed configuration. This is the only module that reads the environment.
//!
//! Every setting has an environment variable, a default (in `Config::default`), and a row in the README's
//! configuration table. Command-line flags (`--bind`, `--no-demo`) override the environment in `cli.rs`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::SecretString;

use crate::cache::{CacheConfig, CacheMode};

/// Which database the service talks to, decided by `DATABASE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// `FOLIO_ENV`: development (friendly defaults) or production (secrets required, nothing permissive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// How bearer tokens are issued and verified (see `auth`).
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `FOLIO_JWT_SECRET`: HS256 key of Folio's own tokens, at least 32 bytes. Required in production; in
    /// development a fixed, clearly named development secret is used instead.
    pub jwt_secret: Option<SecretString>,
    /// `FOLIO_TOKEN_ISSUER`: the `iss` of Folio's own tokens.
    pub token_issuer: String,
    /// `FOLIO_TOKEN_AUDIENCE`: the `aud` of Folio's own tokens.
    pub token_audience: String,
    /// `FOLIO_TOKEN_TTL_SECS`: lifetime of the tokens `signUp`, `login` and `folio token` hand out.
    pub token_ttl: Duration,
    /// `FOLIO_JWT_LEEWAY_SECS`: clock skew tolerated on `exp` and `nbf`, at most 60 s.
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
    /// `FOLIO_JWT_ROLE_CLAIM`: a claim whose value (`USER`/`ADMIN`) sets the user's role. Unset: roles are
    /// managed in Folio only and never taken from an external token.
    pub role_claim: Option<String>,
    /// `FOLIO_JWKS_MIN_REFRESH_SECS`: the least time between two JWKS fetches caused by unknown `kid`s, so a
    /// flood of made-up key ids cannot hammer the provider.
    pub min_refresh: Duration,
}

/// The most clock skew accepted on token times.
pub const MAX_LEEWAY_SECS: u64 = 60;

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            token_issuer: "folio".into(),
            token_audience: "folio".into(),
            token_ttl: Duration::from_secs(3600),
            leeway_secs: 30,
            external: None,
        }
    }
}

/// Limits and policies of the HTTP edge (issue: GraphQL over HTTP, abuse limits, CSRF, rate limits).
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// `FOLIO_MAX_BODY_BYTES`: largest request body.
    pub max_body_bytes: usize,
    /// `FOLIO_MAX_DOCUMENT_BYTES`: largest GraphQL document (the `query` text).
    pub max_document_bytes: usize,
    /// `FOLIO_MAX_TOKENS`: most lexical tokens in a document.
    pub max_tokens: usize,
    /// `FOLIO_MAX_ALIASES`: most aliased fields in a document.
    pub max_aliases: usize,
    /// `FOLIO_MAX_ROOT_FIELDS`: most root fields in the operation.
    pub max_root_fields: usize,
    /// `FOLIO_MAX_DIRECTIVES`: most directives on one field.
    pub max_directives: usize,
    /// `FOLIO_REQUEST_TIMEOUT_MS`: longest a GraphQL execution may run.
    pub request_timeout: Duration,
    /// `FOLIO_CORS_ORIGINS`: origins allowed to call from a browser (comma-separated, `*` for any, `none` for
    /// no cross-origin calls). Unset: any origin in development, none in production.
    pub cors_origins: Vec<String>,
    /// `FOLIO_INTROSPECTION`: serve `__schema`/`__type`. Unset: on in development, off in production.
    pub introspection: bool,
    /// `FOLIO_TRUSTED_PROXIES`: how many reverse proxies in front of Folio append to `X-Forwarded-For`; the
    /// client address is the one that many hops from the right. 0: use the connection's address.
    pub trusted_proxies: usize,
    /// `FOLIO_RATE_LIMIT_PER_MIN`: sustained GraphQL requests per minute per user (or per client address for
    /// anonymous callers); 0 turns rate limiting off. Unset: 1200 in production, off in development.
    pub rate_per_min: u32,
    /// `FOLIO_RATE_LIMIT_BURST`: requests a caller may make at once before the rate applies.
    pub rate_burst: u32,
    /// `FOLIO_LOGIN_ATTEMPTS_PER_15MIN`: `login` attempts per email and per client address in 15 minutes.
    pub login_attempts: u32,
}

/// The Stripe billing webhook (`POST /api/webhooks/stripe`, see `billing`).
#[derive(Clone, Debug)]
pub struct StripeConfig {
    /// `STRIPE_WEBHOOK_SECRET`: the endpoint's signing secrets (`whsec_...`), comma-separated. Several are
    /// accepted so a rolled secret keeps working while Stripe signs with both. Empty: the webhook answers 503.
    pub webhook_secrets: Vec<SecretString>,
    /// `STRIPE_WEBHOOK_TOLERANCE_SECS`: how far a signature's timestamp may lie from now, in either direction,
    /// which bounds how long a captured request can be replayed.
    pub tolerance_secs: u64,
}

/// Stripe's own libraries default to five minutes.
pub const DEFAULT_STRIPE_TOLERANCE_SECS: u64 = 300;

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            webhook_secrets: Vec::new(),
            tolerance_secs: DEFAULT_STRIPE_TOLERANCE_SECS,
        }
    }
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
    /// `FOLIO_ENV`: `development` (default) or `production`.
    pub env: Environment,
    /// `FOLIO_BIND`: the address `folio serve` listens on.
    pub bind: SocketAddr,
    /// `DATABASE_URL`: `sqlite://...` or `postgres://...`. Unset: a SQLite file `folio.db` in the working directory.
    pub database_url: String,
    /// `FOLIO_DB_MAX_CONNECTIONS`: pool size.
    pub db_max_connections: u32,
    /// `FOLIO_DB_ACQUIRE_TIMEOUT_MS`: how long a request waits for a pooled connection before it gets
    /// `SERVICE_UNAVAILABLE`.
    pub db_acquire_timeout: Duration,
    /// `FOLIO_DEMO_DATA`: seed a small demo set into an empty embedded database on start.
    pub demo_data: bool,
    /// `FOLIO_MAX_DEPTH`: deepest selection nesting a query may have.
    pub max_depth: usize,
    /// `FOLIO_MAX_COMPLEXITY`: the largest complexity score a query may have (lists count `first` times).
    pub max_complexity: usize,
    /// `FOLIO_GRAPHIQL`: serve the GraphiQL playground on `GET /graphql` for browsers.
    pub graphiql: bool,
    /// `FOLIO_LOG`: tracing filter (`info`, `folio=debug,sqlx=warn`, ...).
    pub log_filter: String,
    /// `FOLIO_LOG_FORMAT`: `text` or `json`.
    pub log_format: LogFormat,
    /// Token settings (`FOLIO_JWT_*`, `FOLIO_TOKEN_*`, `FOLIO_JWKS_*`).
    pub auth: AuthConfig,
    /// Response cache settings (`FOLIO_CACHE*`, `REDIS_URL`, `FOLIO_REDIS_TIMEOUT_MS`).
    pub cache: CacheConfig,
    /// HTTP edge limits and policies.
    pub edge: EdgeConfig,
    /// Billing webhook settings (`STRIPE_WEBHOOK_*`).
    pub stripe: StripeConfig,
}

/// The default SQLite location: a file in the working directory, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://folio.db";

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            db_max_connections: 16,
            db_acquire_timeout: Duration::from_secs(3),
            demo_data: true,
            max_depth: 12,
            max_complexity: 20_000,
            graphiql: true,
            log_filter: "info,sqlx=warn".to_owned(),
            log_format: LogFormat::Text,
            auth: AuthConfig::default(),
            cache: CacheConfig {
                mode: CacheMode::Memory,
                redis_url: None,
                max_bytes: 64 * 1024 * 1024,
                prefix: "folio:".into(),
                redis_timeout: Duration::from_millis(250),
                ttl: Duration::from_secs(60),
            },
            edge: EdgeConfig {
                max_body_bytes: 1024 * 1024,
                max_document_bytes: 64 * 1024,
                max_tokens: 5_000,
                max_aliases: 30,
                max_root_fields: 20,
                max_directives: 5,
                request_timeout: Duration::from_secs(10),
                cors_origins: vec!["*".into()],
                introspection: true,
                trusted_proxies: 0,
                rate_per_min: 1_200,
                rate_burst: 120,
                login_attempts: 10,
            },
            stripe: StripeConfig::default(),
        }
    }
}

impl Config {
    /// Reads the process environment (after `.env`, loaded by `main`).
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Builds a config from any name → value lookup; `from_env` passes the process environment, tests a map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let d = Self::default();
        let parse = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let env = match parse("FOLIO_ENV")
            .map(|v| v.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("development") | Some("dev") => Environment::Development,
            Some("production") | Some("prod") => Environment::Production,
            Some(other) => bail!("FOLIO_ENV must be `development` or `production`, not `{other}`"),
        };
        let production = env == Environment::Production;
        Ok(Self {
            env,
            bind: opt(&parse, "FOLIO_BIND")?.unwrap_or(d.bind),
            database_url: parse("DATABASE_URL").unwrap_or(d.database_url),
            db_max_connections: opt(&parse, "FOLIO_DB_MAX_CONNECTIONS")?
                .unwrap_or(d.db_max_connections),
            db_acquire_timeout: opt(&parse, "FOLIO_DB_ACQUIRE_TIMEOUT_MS")?
                .map(Duration::from_millis)
                .unwrap_or(d.db_acquire_timeout),
            demo_data: bool_opt(&parse, "FOLIO_DEMO_DATA")?.unwrap_or(d.demo_data),
            max_depth: opt(&parse, "FOLIO_MAX_DEPTH")?.unwrap_or(d.max_depth),
            max_complexity: opt(&parse, "FOLIO_MAX_COMPLEXITY")?.unwrap_or(d.max_complexity),
            // Production serves no playground unless asked to.
            graphiql: bool_opt(&parse, "FOLIO_GRAPHIQL")?.unwrap_or(d.graphiql && !production),
            log_filter: parse("FOLIO_LOG").unwrap_or(d.log_filter),
            log_format: match parse("FOLIO_LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => bail!("FOLIO_LOG_FORMAT must be `text` or `json`, not `{other}`"),
            },
            auth: auth_from(&parse, d.auth)?,
            cache: cache_from(&parse, d.cache)?,
            edge: edge_from(&parse, d.edge, production)?,
            stripe: stripe_from(&parse, d.stripe)?,
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

    /// The backend `database_url` names.
    pub fn database_kind(&self) -> anyhow::Result<DatabaseKind> {
        database_kind(&self.database_url)
    }
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

fn edge_from(
    parse: &impl Fn(&str) -> Option<String>,
    d: EdgeConfig,
    production: bool,
) -> anyhow::Result<EdgeConfig> {
    let cors_origins = match parse("FOLIO_CORS_ORIGINS") {
        Some(v) if v.trim().eq_ignore_ascii_case("none") => Vec::new(),
        Some(v) => v
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_owned())
            .filter(|o| !o.is_empty())
            .collect::<Vec<_>>(),
        None if production => Vec::new(),
        None => d.cors_origins,
    };
    for origin in &cors_origins {
        if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
            bail!("FOLIO_CORS_ORIGINS has an invalid origin `{origin}`");
        }
    }
    Ok(EdgeConfig {
        max_body_bytes: opt(parse, "FOLIO_MAX_BODY_BYTES")?.unwrap_or(d.max_body_bytes),
        max_document_bytes: opt(parse, "FOLIO_MAX_DOCUMENT_BYTES")?.unwrap_or(d.max_document_bytes),
        max_tokens: opt(parse, "FOLIO_MAX_TOKENS")?.unwrap_or(d.max_tokens),
        max_aliases: opt(parse, "FOLIO_MAX_ALIASES")?.unwrap_or(d.max_aliases),
        max_root_fields: opt(parse, "FOLIO_MAX_ROOT_FIELDS")?.unwrap_or(d.max_root_fields),
        max_directives: opt(parse, "FOLIO_MAX_DIRECTIVES")?.unwrap_or(d.max_directives),
        request_timeout: opt(parse, "FOLIO_REQUEST_TIMEOUT_MS")?
            .map(Duration::from_millis)
            .unwrap_or(d.request_timeout),
        cors_origins,
        introspection: bool_opt(parse, "FOLIO_INTROSPECTION")?
            .unwrap_or(d.introspection && !production),
        trusted_proxies: opt(parse, "FOLIO_TRUSTED_PROXIES")?.unwrap_or(d.trusted_proxies),
        // On by default in production only: in development one address (a laptop, a load test) is everyone.
        rate_per_min: opt(parse, "FOLIO_RATE_LIMIT_PER_MIN")?.unwrap_or(if production {
            d.rate_per_min
        } else {
            0
        }),
        rate_burst: opt(parse, "FOLIO_RATE_LIMIT_BURST")?
            .unwrap_or(d.rate_burst)
            .max(1),
        login_attempts: opt(parse, "FOLIO_LOGIN_ATTEMPTS_PER_15MIN")?
            .unwrap_or(d.login_attempts)
            .max(1),
    })
}

fn cache_from(
    parse: &impl Fn(&str) -> Option<String>,
    d: CacheConfig,
) -> anyhow::Result<CacheConfig> {
    let redis_url = parse("REDIS_URL");
    let mode = match parse("FOLIO_CACHE")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None if redis_url.is_some() => CacheMode::Redis,
        None => d.mode,
        Some("memory") => CacheMode::Memory,
        Some("redis") => CacheMode::Redis,
        Some("off") => CacheMode::Off,
        Some(other) => bail!("FOLIO_CACHE must be `memory`, `redis` or `off`, not `{other}`"),
    };
    if mode == CacheMode::Redis && redis_url.is_none() {
        bail!("FOLIO_CACHE=redis needs REDIS_URL");
    }
    let timeout_ms: u64 =
        opt(parse, "FOLIO_REDIS_TIMEOUT_MS")?.unwrap_or(d.redis_timeout.as_millis() as u64);
    Ok(CacheConfig {
        mode,
        redis_url: redis_url.map(SecretString::from),
        max_bytes: opt(parse, "FOLIO_CACHE_MAX_BYTES")?.unwrap_or(d.max_bytes),
        prefix: parse("FOLIO_CACHE_PREFIX").unwrap_or(d.prefix),
        redis_timeout: Duration::from_millis(timeout_ms.max(1)),
        ttl: opt(parse, "FOLIO_CACHE_TTL_SECS")?
            .map(Duration::from_secs)
            .unwrap_or(d.ttl),
    })
}

fn auth_from(parse: &impl Fn(&str) -> Option<String>, d: AuthConfig) -> anyhow::Result<AuthConfig> {
    let jwt_secret = match parse("FOLIO_JWT_SECRET") {
        Some(secret) if secret.len() < 32 => {
            bail!(
                "FOLIO_JWT_SECRET must be at least 32 bytes long (it is {})",
                secret.len()
            )
        }
        other => other.map(SecretString::from),
    };
    let leeway_secs = opt(parse, "FOLIO_JWT_LEEWAY_SECS")?.unwrap_or(d.leeway_secs);
    if leeway_secs > MAX_LEEWAY_SECS {
        bail!("FOLIO_JWT_LEEWAY_SECS may be at most {MAX_LEEWAY_SECS}, not {leeway_secs}");
    }
    let token_ttl: u64 = opt(parse, "FOLIO_TOKEN_TTL_SECS")?.unwrap_or(d.token_ttl.as_secs());
    if token_ttl == 0 {
        bail!("FOLIO_TOKEN_TTL_SECS must be positive");
    }
    let external = match (
        parse("FOLIO_JWKS_URL"),
        parse("FOLIO_JWT_ISSUER"),
        parse("FOLIO_JWT_AUDIENCE"),
    ) {
        (None, None, None) => None,
        (Some(jwks_url), Some(issuer), Some(audience)) => Some(ExternalIdp {
            jwks_url,
            issuer,
            audience,
            role_claim: parse("FOLIO_JWT_ROLE_CLAIM"),
            min_refresh: Duration::from_secs(
                opt(parse, "FOLIO_JWKS_MIN_REFRESH_SECS")?.unwrap_or(30),
            ),
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
        token_issuer: parse("FOLIO_TOKEN_ISSUER").unwrap_or(d.token_issuer),
        token_audience: parse("FOLIO_TOKEN_AUDIENCE").unwrap_or(d.token_audience),
        token_ttl: Duration::from_secs(token_ttl),
        leeway_secs,
        external,
    })
}

fn stripe_from(
    parse: &impl Fn(&str) -> Option<String>,
    d: StripeConfig,
) -> anyhow::Result<StripeConfig> {
    let webhook_secrets = parse("STRIPE_WEBHOOK_SECRET")
        .map(|raw| {
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(SecretString::from)
                .collect()
        })
        .unwrap_or(d.webhook_secrets);
    let tolerance_secs: u64 =
        opt(parse, "STRIPE_WEBHOOK_TOLERANCE_SECS")?.unwrap_or(d.tolerance_secs);
    if tolerance_secs == 0 {
        // Zero would refuse nearly every delivery (network latency alone exceeds it), silently.
        bail!("STRIPE_WEBHOOK_TOLERANCE_SECS must be positive");
    }
    Ok(StripeConfig {
        webhook_secrets,
        tolerance_secs,
    })
}

fn opt<T: FromStr>(parse: &impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    parse(name)
        .map(|raw| {
            raw.trim()
                .parse::<T>()
                .map_err(|e| anyhow::anyhow!("{e}"))
                .with_context(|| format!("{name} has an invalid value `{raw}`"))
        })
        .transpose()
}

fn bool_opt(parse: &impl Fn(&str) -> Option<String>, name: &str) -> anyhow::Result<Option<bool>> {
    parse(name)
        .map(|raw| match raw.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => bail!("{name} must be true or false, not `{raw}`"),
        })
        .transpose()
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
    fn external_idp_settings_come_together_and_leeway_is_capped() {
        let err = with(&[("FOLIO_JWKS_URL", "https://idp/jwks")]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("FOLIO_JWT_ISSUER") && msg.contains("FOLIO_JWT_AUDIENCE"));
        let err = with(&[("FOLIO_JWT_LEEWAY_SECS", "61")]).unwrap_err();
        assert!(format!("{err:#}").contains("FOLIO_JWT_LEEWAY_SECS"));
    }
}
