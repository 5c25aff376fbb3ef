//! The post domain of the schema: the `Post` type, the post queries, mutations and subscriptions.

mod inputs;
mod mutation;
mod query;
mod subscription;
mod types;

pub use mutation::PostMutation;
pub use query::{PostFilter, PostQuery};
pub use subscription::PostSubscription;
pub(crate) use subscription::trigger;
pub use types::{Post, visible_in, visible_to, visible_with};
