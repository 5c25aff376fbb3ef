//! The user domain of the schema: the `User` type, its enums, the user queries and the account mutations.

mod inputs;
mod mutation;
mod query;
mod types;

pub use mutation::{AuthPayload, UserMutation};
pub use query::UserQuery;
pub use types::{Plan, Role, User, may_see_private};
