//! Comment subscriptions: `commentAdded(postId)`. See `posts/subscription.rs` for how an execution answers one
//! trigger.

use async_graphql::{Context, ID, Subscription};
use futures_util::Stream;
use futures_util::stream;

use super::Comment;
use crate::cache::Tag;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::ids;
use crate::graphql::posts::{trigger, visible_to};
use crate::live::{Event, Trigger};

#[derive(Default)]
pub struct CommentSubscription;

#[Subscription]
impl CommentSubscription {
    /// New comments on one post, as they are added. A post the viewer may not see (missing, or someone else's
    /// draft): `NOT_FOUND`, the same as the post mutations. While the post is hidden (unpublished), nothing flows.
    async fn comment_added(
        &self,
        ctx: &Context<'_>,
        post_id: ID,
    ) -> async_graphql::Result<impl Stream<Item = Comment> + use<>> {
        let post_id = ids::parse(&post_id, "postId")?;
        ctx.tag(Tag::Post(post_id));
        ctx.tag(Tag::PostComments(post_id));
        let trigger = trigger(ctx);
        let added: Vec<i64> = trigger
            .events()
            .filter_map(|e| match e {
                Event::CommentAdded {
                    post_id: on,
                    comment_id,
                } if *on == post_id => Some(*comment_id),
                _ => None,
            })
            .collect();
        let starting = matches!(trigger, Trigger::Start);
        if !starting && added.is_empty() {
            return Ok(stream::iter(Vec::new()));
        }
        let store = ctx.store()?;
        let visible = store
            .posts_by_ids(&[post_id])
            .await?
            .into_iter()
            .next()
            .is_some_and(|row| visible_to(ctx.viewer(), &row));
        if !visible {
            if starting {
                return Err(AppError::NotFound(format!("No post with id {post_id}.")).into());
            }
            return Ok(stream::iter(Vec::new()));
        }
        let rows = store.comments_by_ids(&added).await?;
        let comments: Vec<Comment> = added
            .iter()
            .filter_map(|id| rows.iter().find(|r| r.id == *id))
            .map(|row| Comment(row.clone()))
            .collect();
        Ok(stream::iter(comments))
    }
}
