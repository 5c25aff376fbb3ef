//! The user domain of the schema: the `User` type, its enums, and the user queries.

mod query;
mod types;

pub use query::UserQuery;
pub use types::{Plan, Role, User};
