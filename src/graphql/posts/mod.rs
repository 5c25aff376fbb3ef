//! The post domain of the schema: the `Post` type and the post queries.

mod query;
mod types;

pub use query::PostQuery;
pub use types::Post;
