//! `Post` as clients see it.

use async_graphql::{Context, ID, Object};
use chrono::{DateTime, Utc};

use crate::auth::Viewer;
use crate::cache::Tag;
use crate::error::AppError;
use crate::graphql::comments::Comment;
use crate::graphql::connection::{self, Conn, CountOf};
use crate::graphql::context::ContextExt;
use crate::graphql::cost;
use crate::graphql::ids;
use crate::graphql::loaders::{CommentCount, PostComments, UserId};
use crate::graphql::users::User;
use crate::store::PostRow;

/// A piece of writing by one author; readers comment on published posts.
pub struct Post(pub PostRow);

impl Post {
    /// The post, recorded as read by this response (for cache purging).
    pub fn read(ctx: &Context<'_>, row: PostRow) -> Self {
        ctx.tag(Tag::Post(row.id));
        Self(row)
    }
}

/// Whether `viewer` may know that this post exists: published posts are public, drafts belong to their author
/// and to admins. Every path to a post (`post`, lists, `Comment.post`, mutations) asks this.
pub fn visible_to(viewer: &Viewer, row: &PostRow) -> bool {
    row.published || viewer.owns_or_admin(row.author_id)
}

/// `visible_to` for the current request. Only a draft makes the answer depend on who asks, so only a draft
/// consults (and thereby marks the response as depending on) the viewer: a published post stays cacheable for
/// everyone.
pub fn visible_in(ctx: &Context<'_>, row: &PostRow) -> bool {
    visible_with(row, || ctx.viewer())
}

/// `visible_in` for a path without a resolver context (`graphql/compiled`): `viewer` is asked, and so marks
/// the response as depending on who asks, only for a draft.
pub fn visible_with<'v>(row: &PostRow, viewer: impl FnOnce() -> &'v Viewer) -> bool {
    row.published || visible_to(viewer(), row)
}

#[Object(cache_control(max_age = 60))]
impl Post {
    async fn id(&self) -> ID {
        ids::id(self.0.id)
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn content(&self) -> &str {
        &self.0.content
    }

    async fn published(&self) -> bool {
        self.0.published
    }

    /// When the post was last published; `null` for a draft.
    async fn published_at(&self) -> Option<DateTime<Utc>> {
        self.0.published_at
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    async fn author(&self, ctx: &Context<'_>) -> async_graphql::Result<User> {
        ctx.tag(Tag::User(self.0.author_id));
        let row = ctx.loaders()?.load_one(UserId(self.0.author_id)).await?;
        // The foreign key guarantees the author exists; its absence is a broken invariant, not a client error.
        row.map(User::new).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "post {} has no author {}",
                self.0.id,
                self.0.author_id
            ))
            .into()
        })
    }

    async fn comment_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        ctx.tag(Tag::PostComments(self.0.id));
        let n = ctx
            .loaders()?
            .load_one(CommentCount(self.0.id))
            .await?
            .unwrap_or(0);
        Ok(connection::count(n))
    }

    /// Comments on this post, oldest first.
    #[graphql(
        complexity = "connection::complexity(first, child_complexity)",
        directive = cost::list_size::apply(None, cost::by_first(), cost::edges_and_nodes())
    )]
    async fn comments(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Comment>> {
        let page = connection::page_args(first, after.as_deref())?;
        let key = PostComments {
            post_id: self.0.id,
            page,
        };
        let rows = ctx.loaders()?.load_one(key).await?.unwrap_or_default();
        // Every change to a comment purges this tag (`tags::comment_changed`): the page needs no other.
        ctx.tag(Tag::PostComments(self.0.id));
        Ok(connection::build(
            rows,
            page,
            CountOf::PostComments(self.0.id),
            |r| r.id,
            Comment,
        ))
    }
}
