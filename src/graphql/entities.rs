//! Apollo Federation entities: how a gateway turns a `{ __typename, id }` representation into a `User`, `Post`
//! or `Comment` (`Query._entities`).
//!
//! Each resolver is what the matching root query does, for one representation: the same loaders (async-graphql
//! resolves the representations of one `_entities` call concurrently, so the siblings share one batch and one
//! statement per entity type), the same visibility rules, the same cache tags. A representation that names
//! nothing the caller may see (an unknown or malformed id, someone else's draft, a comment on it) resolves to
//! `null` in its place; the rest of the list is unaffected.

use async_graphql::{Context, ID, Object};

use crate::cache::Tag;
use crate::graphql::comments::Comment;
use crate::graphql::context::ContextExt;
use crate::graphql::ids;
use crate::graphql::loaders::{CommentId, PostId, UserId};
use crate::graphql::posts::{Post, visible_in};
use crate::graphql::users::User;

/// The entity resolvers, merged into the query root. They add no fields of their own: async-graphql turns them
/// into `_entities`, the `_Entity` union and the `@key(fields: "id")` of each type.
#[derive(Default)]
pub struct EntityQuery;

/// A representation's id as a database id; anything else names no entity.
fn entity_id(id: &ID) -> Option<i64> {
    ids::parse(id, "id").ok()
}

#[Object]
impl EntityQuery {
    /// `User` by `id`, as `user(id)`: private fields (`email`, `plan`) follow the field rule.
    #[graphql(entity)]
    async fn find_user_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<User>> {
        let Some(id) = entity_id(&id) else {
            return Ok(None);
        };
        // Tagged even when null: an account created with this id must purge a cached `null`.
        ctx.tag(Tag::User(id));
        let row = ctx.loaders()?.load_one(UserId(id)).await?;
        Ok(row.map(User::new))
    }

    /// `Post` by `id`, as `post(id)`: a draft is `null` for anyone but its author and admins.
    #[graphql(entity)]
    async fn find_post_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Post>> {
        let Some(id) = entity_id(&id) else {
            return Ok(None);
        };
        // Tagged even when null: creating or publishing this post must purge a cached `null`.
        ctx.tag(Tag::Post(id));
        let row = ctx.loaders()?.load_one(PostId(id)).await?;
        Ok(row.filter(|r| visible_in(ctx, r)).map(Post))
    }

    /// `Comment` by `id`: visible when its post is, so a comment on a draft is `null` for anyone who may not see
    /// the draft.
    #[graphql(entity)]
    async fn find_comment_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> async_graphql::Result<Option<Comment>> {
        let Some(id) = entity_id(&id) else {
            return Ok(None);
        };
        ctx.tag(Tag::Comment(id));
        let Some(found) = ctx.loaders()?.load_one(CommentId(id)).await? else {
            return Ok(None);
        };
        // The post's state decides visibility: publishing, unpublishing or deleting it purges this answer.
        ctx.tag(Tag::Post(found.comment.post_id));
        // As `visible_in`: only a draft makes the answer depend on who asks.
        let visible = found.post_published || ctx.viewer().owns_or_admin(found.post_author_id);
        Ok(visible.then_some(Comment(found.comment)))
    }
}
