//! The GraphQL schema: one folder per domain (types and queries together), plus the shared pieces: typed
//! context access, batched loaders, Relay connections and id parsing.

pub mod batch;
pub mod comments;
pub mod connection;
pub(crate) mod context;
pub mod ids;
pub mod loaders;
pub mod posts;
pub mod schema;
pub mod users;

pub use schema::{FolioSchema, Limits, build_schema};
