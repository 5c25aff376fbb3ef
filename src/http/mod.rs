//! The HTTP edge, and only HTTP: routes and layers (`router`), GraphQL over HTTP (`graphql`: media types,
//! bodies and query strings, `Authorization` to viewer, rate limits, then the operation pipeline), turning an
//! outcome into a response (`response`: status, `Cache-Control`, `ETag`/304, `X-Cache`), and the plain routes:
//! `/api/cache/purge` (`cache`), WebSocket and server-sent events (`live`), `/api/webhooks/stripe` (`webhooks`), `/healthz`, `/readyz`, `/metrics`
//! (`health`). It knows nothing of the executor's internals.

pub mod cache;
pub mod graphiql;
pub mod graphql;
pub mod health;
pub mod live;
pub mod response;
pub mod router;
pub mod state;
pub mod webhooks;

pub use router::{admin_router, router};
pub use state::{AppState, Shared};
