//! Post mutations: create, update, publish, unpublish, delete. Any signed-in user may create; only the author
//! or an admin may change a post. Someone else's draft is reported as missing, exactly like a missing post.

use async_graphql::{Context, ID, Object};

use super::Post;
use super::inputs::{CreatePostInput, UpdatePostInput};
use super::types::visible_to;
use crate::auth::Viewer;
use crate::cache::tags;
use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::guards::LoggedIn;
use crate::graphql::ids;
use crate::live::Event;
use crate::store::{NewPost, PostChanges, PostRow, Store};

#[derive(Default)]
pub struct PostMutation;

#[Object]
impl PostMutation {
    /// Writes a new post (a draft unless `published: true`).
    #[graphql(guard = "LoggedIn")]
    async fn create_post(
        &self,
        ctx: &Context<'_>,
        input: CreatePostInput,
    ) -> async_graphql::Result<Post> {
        let author_id = ctx.viewer().require_user()?;
        let post = NewPost::try_from(input)?;
        let row = ctx.store()?.create_post(author_id, &post).await?;
        ctx.purge_after_commit(vec![
            tags::post(row.id),
            tags::POST_LIST.to_owned(),
            tags::user_posts(row.author_id),
        ]);
        if row.published {
            ctx.announce_after_commit(Event::PostPublished { post_id: row.id });
        }
        Ok(Post(row))
    }

    /// Changes a post's title and/or content. The author or an admin.
    #[graphql(guard = "LoggedIn")]
    async fn update_post(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdatePostInput,
    ) -> async_graphql::Result<Post> {
        let id = ids::parse(&id, "id")?;
        let changes = PostChanges::try_from(input)?;
        let store = ctx.store()?;
        editable(store, ctx.viewer(), id).await?;
        let row = store
            .update_post(id, &changes)
            .await?
            .ok_or_else(|| gone(id))?;
        // The list tag too: a new title or content can move the post in or out of search results.
        ctx.purge_after_commit(vec![tags::post(id), tags::POST_LIST.to_owned()]);
        Ok(Post(row))
    }

    /// Makes a draft public. The author or an admin; publishing a published post changes nothing.
    #[graphql(guard = "LoggedIn")]
    async fn publish_post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Post> {
        set_published(ctx, &id, true).await
    }

    /// Turns a post back into a draft. The author or an admin.
    #[graphql(guard = "LoggedIn")]
    async fn unpublish_post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Post> {
        set_published(ctx, &id, false).await
    }

    /// Deletes a post and its comments; returns its id. The author or an admin.
    #[graphql(guard = "LoggedIn")]
    async fn delete_post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<ID> {
        let post_id = ids::parse(&id, "id")?;
        let store = ctx.store()?;
        let post = editable(store, ctx.viewer(), post_id).await?;
        if !store.delete_post(post_id).await? {
            return Err(gone(post_id).into());
        }
        ctx.purge_after_commit(vec![
            tags::post(post_id),
            tags::POST_LIST.to_owned(),
            tags::user_posts(post.author_id),
            tags::post_comments(post_id),
        ]);
        Ok(ids::id(post_id))
    }
}

async fn set_published(ctx: &Context<'_>, id: &ID, published: bool) -> async_graphql::Result<Post> {
    let id = ids::parse(id, "id")?;
    let store = ctx.store()?;
    let before = editable(store, ctx.viewer(), id).await?;
    let row = store
        .set_published(id, published)
        .await?
        .ok_or_else(|| gone(id))?;
    ctx.purge_after_commit(vec![
        tags::post(id),
        tags::POST_LIST.to_owned(),
        tags::user_posts(row.author_id),
    ]);
    if row.published && !before.published {
        ctx.announce_after_commit(Event::PostPublished { post_id: id });
    }
    Ok(Post(row))
}

/// The post, if the viewer may change it: `NOT_FOUND` when it is missing or a draft they may not see,
/// `FORBIDDEN` when they can see it but it is not theirs. Read from the store, not the request's loaders, so the
/// decision never rests on a value cached earlier in the request.
async fn editable(store: &Store, viewer: &Viewer, id: i64) -> Result<PostRow, AppError> {
    let row = store.posts_by_ids(&[id]).await?.into_iter().next();
    match row {
        Some(row) if viewer.owns_or_admin(row.author_id) => Ok(row),
        Some(row) if visible_to(viewer, &row) => Err(AppError::Forbidden(
            "Only the author or an admin may change this post.".into(),
        )),
        _ => Err(gone(id)),
    }
}

fn gone(id: i64) -> AppError {
    AppError::NotFound(format!("No post with id {id}."))
}
