//! Typed configuration. This is the only module that reads the environment.
//!
//! Every setting has an environment variable, a default (in `Config::default`), and a row in the README's
//! configuration table. Command-line flags (`--bind`, `--no-demo`) override the environment in `cli.rs`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};

/// Which database the service talks to, decided by `DATABASE_URL`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug)]
pub struct Config {
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
}

/// The default SQLite location: a file in the working directory, created on first run.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://folio.db";

impl Default for Config {
    fn default() -> Self {
        Self {
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
        Ok(Self {
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
            graphiql: bool_opt(&parse, "FOLIO_GRAPHIQL")?.unwrap_or(d.graphiql),
            log_filter: parse("FOLIO_LOG").unwrap_or(d.log_filter),
            log_format: match parse("FOLIO_LOG_FORMAT").as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => bail!("FOLIO_LOG_FORMAT must be `text` or `json`, not `{other}`"),
            },
        })
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
}
