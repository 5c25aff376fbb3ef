//! The comment domain of the schema: the `Comment` type and the comment mutations.

mod inputs;
mod mutation;
mod types;

pub use mutation::CommentMutation;
pub use types::Comment;
