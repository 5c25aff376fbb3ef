//! The GraphQL schema: one folder per domain (types, inputs, queries and mutations together), plus the shared
//! pieces: typed context access, guards, input validation, batched loaders and prefetching, Relay connections, id parsing, and
//! the federation entity resolvers (`entities.rs`).

pub mod batch;
pub mod cache;
pub mod comments;
pub mod compiled;
pub mod connection;
pub mod context;
pub mod entities;
pub mod guards;
pub mod ids;
pub mod loaders;
pub mod posts;
pub mod prefetch;
pub mod schema;
pub mod users;

pub use schema::{FolioSchema, Limits, LoginLimits, SchemaData, build_schema, sdl_of};
