//! The HTTP edge: routes, middleware, and handlers. Knows requests and responses, not GraphQL types.

pub mod cache;
pub mod execution;
pub mod graphql;
pub mod health;
pub mod limits;
pub mod router;

pub use router::{AppState, router};
