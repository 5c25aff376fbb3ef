//! Comment mutations: any signed-in user may comment on a published post; a comment may be deleted by its
//! author or an admin.

use async_graphql::{Context, ID, Object};

use super::Comment;
use super::inputs::{AddCommentInput, NewComment};
use crate::cache::tags;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::guards::LoggedIn;
use crate::graphql::ids;
use crate::graphql::posts::visible_to;
use crate::live::Event;
use crate::store::CreateComment;

#[derive(Default)]
pub struct CommentMutation;

#[Object]
impl CommentMutation {
    /// Comments on a published post. A draft is `NOT_FOUND` to anyone who may not see it, and `FORBIDDEN` to
    /// its author and admins (drafts take no comments).
    #[graphql(guard = "LoggedIn")]
    async fn add_comment(
        &self,
        ctx: &Context<'_>,
        input: AddCommentInput,
    ) -> async_graphql::Result<Comment> {
        let viewer = ctx.viewer();
        let author_id = viewer.require_user()?;
        let NewComment { post_id, body } = NewComment::try_from(input)?;
        let store = ctx.store()?;
        let missing = || AppError::NotFound(format!("No post with id {post_id}."));
        match store.posts_by_ids(&[post_id]).await?.into_iter().next() {
            Some(post) if post.published => {}
            Some(post) if visible_to(viewer, &post) => {
                return Err(AppError::Forbidden(
                    "Drafts take no comments; publish the post first.".into(),
                )
                .into());
            }
            _ => return Err(missing().into()),
        }
        let row = store
            .add_comment(&CreateComment {
                post_id,
                author_id,
                body,
            })
            .await?
            // Unpublished or deleted between the check and the insert.
            .ok_or_else(missing)?;
        ctx.purge_after_commit(tags::comment_changed(row.id, post_id));
        ctx.announce_after_commit(Event::CommentAdded {
            post_id,
            comment_id: row.id,
        });
        Ok(Comment(row))
    }

    /// Deletes a comment; returns its id. Its author or an admin. A comment on a draft the viewer may not see is
    /// `NOT_FOUND`, like a missing one.
    #[graphql(guard = "LoggedIn")]
    async fn delete_comment(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let comment_id = ids::parse(&id, "id")?;
        let viewer = ctx.viewer();
        let store = ctx.store()?;
        let missing = || AppError::NotFound(format!("No comment with id {comment_id}."));
        let comment = store
            .comments_by_ids(&[comment_id])
            .await?
            .into_iter()
            .next()
            .ok_or_else(missing)?;
        // A comment on a post the viewer may not see (someone else's draft) is answered exactly as a missing one:
        // nothing tells the two apart, not even to the comment's own author.
        let post = store
            .posts_by_ids(&[comment.post_id])
            .await?
            .into_iter()
            .next();
        if !post.is_some_and(|post| visible_to(viewer, &post)) {
            return Err(missing().into());
        }
        if !viewer.owns_or_admin(comment.author_id) {
            return Err(AppError::Forbidden(
                "Only the comment's author or an admin may delete it.".into(),
            )
            .into());
        }
        if !store.delete_comment(comment_id).await? {
            return Err(missing().into());
        }
        ctx.purge_after_commit(tags::comment_changed(comment_id, comment.post_id));
        Ok(ids::id(comment_id))
    }
}
