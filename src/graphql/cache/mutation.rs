//! `purgeCache(tags)`: drops every cached response under the given tags, for admins.

use async_graphql::{Context, Object};

use super::check_purge_tags;
use crate::graphql::context::ContextExt;
use crate::graphql::guards::AdminOnly;

#[derive(Default)]
pub struct CacheMutation;

#[Object]
impl CacheMutation {
    /// Drops every cached response that read one of `tags` (`Post:7`, `User:3`, `Post:list`, `User:3:posts`,
    /// `Post:7:comments`, `Comment:9`) and returns how many distinct tags were purged (the cache checks purges
    /// when a response is read, so it does not count responses). Admins only.
    #[graphql(guard = "AdminOnly")]
    async fn purge_cache(
        &self,
        ctx: &Context<'_>,
        tags: Vec<String>,
    ) -> async_graphql::Result<i32> {
        check_purge_tags(&tags)?;
        let tags: Vec<String> = tags.into_iter().map(|t| t.trim().to_owned()).collect();
        let dropped = ctx.cache()?.purge(&tags).await?;
        Ok(i32::try_from(dropped).unwrap_or(i32::MAX))
    }
}
