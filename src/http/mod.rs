//! The HTTP edge: routes, middleware, and handlers. Knows requests and responses, not GraphQL types.
//! `webhooks` receives Stripe's billing events on `POST /api/webhooks/stripe`.

pub mod cache;
pub mod documents;
pub mod execution;
pub mod graphql;
pub mod health;
pub mod limits;
pub mod router;
pub mod webhooks;

pub use router::{AppState, router};
