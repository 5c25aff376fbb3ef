//! Folio: the GraphQL API of a publishing product.
//!
//! Crate map, following a request inward:
//! - `http`: HTTP only: axum routes and layers (request ids, logs, metrics, CORS, panics); GraphQL over HTTP
//!   (media types, bodies, `Authorization` to viewer, rate limits, outcome to response); `/healthz`, `/readyz`,
//!   `/metrics`, `/api/cache/purge`, `/api/webhooks/stripe`.
//! - `operation`: the pipeline every transport calls to run one GraphQL operation: documents, limits, cache
//!   lookup, single-flight, execution with batching, cache store, purges after mutations, the outcome.
//! - `live`: live data: what a committed write announces (`Change`), the bus that carries it to every instance
//!   (in-process or Redis pub/sub), and the registry of running subscriptions and live queries it wakes.
//! - `auth`: who is asking (`Viewer`): tokens, JWKS, passwords.
//! - `billing`: Stripe webhook signatures and what each event means for a user's plan.
//! - `cache`: the response cache (in-process or Redis), keyed by request and scope, purged by tag.
//! - `graphql`: the async-graphql schema, one folder per domain, with per-request batched loaders; a Federation 2
//!   subgraph whose entities (`User`, `Post`, `Comment`) resolve through the same loaders and rules.
//! - `domain`: validated values (titles, bodies, names, emails): the only text the store's writes accept.
//! - `store`: every SQL statement, for SQLite (embedded default) and PostgreSQL (production).
//! - `error`: the error vocabulary (`Code`, every code a client can see) and `AppError`.
//! - `ratelimit`, `redis_conn`: per-caller token buckets, and the Redis connection they share with the cache.
//! - `config`: every setting, declared once; the only reader of the environment.
//! - `telemetry`, `app`, `cli`, `seed`: logs and metrics, wiring, commands, demo data.

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
pub mod live;
pub mod operation;
pub mod ratelimit;
pub mod redis_conn;
pub mod replicas;
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
