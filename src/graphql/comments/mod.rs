//! The comment domain of the schema: the `Comment` type, the comment mutations and subscriptions.

mod inputs;
mod mutation;
mod subscription;
mod types;

pub use mutation::CommentMutation;
pub use subscription::CommentSubscription;
pub use types::Comment;
