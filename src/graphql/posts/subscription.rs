//! Post subscriptions: `postPublished` and `postUpdated`.
//!
//! Each execution of a subscription answers one trigger (`live::Trigger`, request data): the subscribe itself
//! (`Start`: check the arguments and access, yield nothing) or the changes that woke it. Every execution runs
//! as the viewer of that moment, with fresh loaders, so visibility is decided by the same rule (`visible_to`)
//! at each event as for `post(id)`.

use async_graphql::{Context, ID, Subscription};
use futures_util::Stream;
use futures_util::stream;

use super::{Post, visible_to};
use crate::cache::Tag;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::ids;
use crate::live::{Event, Finish, Trigger};
use std::sync::Arc;

#[derive(Default)]
pub struct PostSubscription;

#[Subscription]
impl PostSubscription {
    /// Posts as they are published (created published, or a draft published). Never a draft, to anyone.
    async fn post_published(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<impl Stream<Item = Post> + use<>> {
        ctx.tag(Tag::PostList);
        let ids: Vec<i64> = trigger(ctx)
            .events()
            .filter_map(|e| match e {
                Event::PostPublished { post_id } => Some(*post_id),
                _ => None,
            })
            .collect();
        let mut posts = Vec::new();
        if !ids.is_empty() {
            let rows = ctx.store()?.posts_by_ids(&ids).await?;
            for id in ids {
                // Still published now: a post unpublished since is not announced.
                if let Some(row) = rows.iter().find(|r| r.id == id && r.published) {
                    posts.push(Post::read(ctx, row.clone()));
                }
            }
        }
        Ok(stream::iter(posts))
    }

    /// The post after each change to it (title, content, publish state), as `post(id)` would answer it. `null`,
    /// and the subscription completes, once it is deleted or becomes invisible to the viewer. A post the viewer
    /// may not see: `NOT_FOUND`, as for the post mutations.
    async fn post_updated(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Option<Post>> + use<>> {
        let id = ids::parse(&id, "id")?;
        ctx.tag(Tag::Post(id));
        let row = ctx
            .store()?
            .posts_by_ids(&[id])
            .await?
            .into_iter()
            .next()
            .filter(|row| visible_to(ctx.viewer(), row));
        let items = match (trigger(ctx), row) {
            (Trigger::Start, Some(_)) => Vec::new(),
            (Trigger::Start, None) => {
                return Err(AppError::NotFound(format!("No post with id {id}.")).into());
            }
            (Trigger::Changed(_), Some(row)) => vec![Some(Post(row))],
            (Trigger::Changed(_), None) => {
                if let Some(finish) = ctx.data_opt::<Arc<Finish>>() {
                    finish.set();
                }
                vec![None]
            }
        };
        Ok(stream::iter(items))
    }
}

/// Why this execution runs (`Start` outside a live execution, where subscriptions do not run anyway).
pub(crate) fn trigger<'a>(ctx: &'a Context<'_>) -> &'a Trigger {
    static START: Trigger = Trigger::Start;
    ctx.data_opt::<Trigger>().unwrap_or(&START)
}
