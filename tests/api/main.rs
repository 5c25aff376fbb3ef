//! Folio's integration suite: one binary, real HTTP against a real app, every test on its own database.
//! Runs on SQLite by default and on PostgreSQL with `FOLIO_TEST_DATABASE_URL` (see `helpers.rs`).

mod helpers;

mod authz;
mod cache;
mod cli;
mod cluster;
mod compiled;
mod edge;
mod federation;
mod fuzz;
mod http;
mod lifecycle;
mod live;
mod loaders;
mod mutations;
mod pagination;
mod persisted;
mod pipeline;
mod properties;
mod queries;
mod replicas;
mod schema_sync;
mod tokens;
mod traces;
mod webhooks;
