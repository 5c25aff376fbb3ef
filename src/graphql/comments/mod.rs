//! The comment domain of the schema: the `Comment` type.

mod types;

pub use types::Comment;
