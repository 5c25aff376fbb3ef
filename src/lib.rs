//! Folio: the GraphQL API of a publishing product.
//!
//! Crate map, following a request inward:
//! - `http`: axum routes and layers (request ids, logs, metrics); `/graphql`, `/healthz`, `/readyz`, `/metrics`,
//!   `/api/cache/purge`, `/api/webhooks/stripe`.
//! - `auth`: who is asking (`Viewer`): tokens, JWKS, passwords.
//! - `billing`: Stripe webhook signatures and what each event means for a user's plan.
//! - `cache`: the response cache (in-process or Redis), keyed by request and scope, purged by tag.
//! - `graphql`: the async-graphql schema, one folder per domain, with per-request batched loaders; a Federation 2
//!   subgraph whose entities (`User`, `Post`, `Comment`) resolve through the same loaders and rules.
//! - `store`: every SQL statement, for SQLite (embedded default) and PostgreSQL (production).
//! - `error`: `AppError`, one error type with stable codes for GraphQL and HTTP.
//! - `ratelimit`, `redis_conn`: per-caller token buckets, and the Redis connection they share with the cache.
//! - `config`, `telemetry`, `app`, `cli`, `seed`: settings, logs and metrics, wiring, commands, demo data.

pub mod app;
pub mod auth;
pub mod billing;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod http;
pub mod operation;
pub mod ratelimit;
pub mod redis_conn;
pub mod seed;
pub mod store;
pub mod telemetry;

pub use app::App;
pub use config::Config;

/// Makes ring the process's TLS crypto provider (idempotent). reqwest is built without a bundled provider so
/// that only one (ring, which sqlx's TLS uses too) is compiled in; every HTTP client needs this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
