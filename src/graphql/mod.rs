//! The GraphQL schema: one folder per domain (types, inputs, queries and mutations together), plus the shared
//! pieces: typed context access and request data (`context`), guards, batched loaders (`loaders`, `batch`) and
//! prefetching, compiled feed plans (`compiled`), Relay connections, id parsing, and the federation entity
//! resolvers (`entities`). It never sees the transport: what a resolver needs of the request is context data
//! the operation pipeline puts there.

pub mod batch;
pub mod cache;
pub mod comments;
pub mod compiled;
pub mod connection;
pub mod context;
pub mod cost;
pub mod entities;
pub mod guards;
pub mod ids;
pub mod loaders;
pub mod posts;
pub mod prefetch;
pub mod schema;
pub mod users;

pub use schema::{FolioSchema, Limits, LoginLimits, SchemaData, build_schema, sdl_of};
