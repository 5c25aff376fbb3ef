//! `Comment` as clients see it.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use crate::cache::Tag;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::ids;
use crate::graphql::loaders::{PostId, UserId};
use crate::graphql::posts::{Post, visible_in};
use crate::graphql::users::User;
use crate::store::CommentRow;

/// A reader's reply to a post.
pub struct Comment(pub CommentRow);

#[Object(cache_control(max_age = 60))]
impl Comment {
    async fn id(&self) -> ID {
        ids::id(self.0.id)
    }

    async fn body(&self) -> &str {
        &self.0.body
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        ctx.tag(Tag::User(self.0.author_id));
        let row = ctx.loaders()?.load_one(UserId(self.0.author_id)).await?;
        row.map(User::new).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "comment {} has no author {}",
                self.0.id,
                self.0.author_id
            ))
            .into()
        })
    }

    /// The post this comment is on. A draft the viewer may not see is `NOT_FOUND`, as if it were missing.
    async fn post(&self, ctx: &Context<'_>) -> async_graphql::Result<Post> {
        ctx.tag(Tag::Post(self.0.post_id));
        let row = ctx.loaders()?.load_one(PostId(self.0.post_id)).await?;
        match row {
            Some(row) if visible_in(ctx, &row) => Ok(Post::read(ctx, row)),
            _ => Err(AppError::NotFound(format!("No post with id {}.", self.0.post_id)).into()),
        }
    }
}
