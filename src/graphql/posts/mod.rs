//! The post domain of the schema: the `Post` type, the post queries and the post mutations.

mod inputs;
mod mutation;
mod query;
mod types;

pub use mutation::PostMutation;
pub use query::PostQuery;
pub use types::{Post, visible_in, visible_to};
