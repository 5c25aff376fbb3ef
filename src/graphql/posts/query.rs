//! Post queries: `post` and the `posts` feed.

use async_graphql::{Context, ID, InputObject, Object};

use crate::error::AppError;
use crate::graphql::connection::{self, Conn, CountOf};
use crate::graphql::context::ContextExt;
use crate::graphql::ids;
use crate::graphql::loaders::PostId;
use crate::store::PostListFilter;

use super::Post;

/// Longest accepted search term, in characters.
const MAX_SEARCH_CHARS: usize = 200;

/// Narrows the `posts` feed.
#[derive(InputObject, Default)]
pub struct PostFilter {
    /// Only posts by this author.
    pub author_id: Option<ID>,
    /// Case-insensitive text to find in the title or the content.
    pub search: Option<String>,
}

impl PostFilter {
    /// Checks the filter and turns it into the store's form.
    fn into_store(self) -> Result<PostListFilter, AppError> {
        let author_id = self
            .author_id
            .as_ref()
            .map(|id| ids::parse(id, "filter.authorId"))
            .transpose()?;
        let search = match self.search.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(term) if term.chars().count() > MAX_SEARCH_CHARS => {
                return Err(AppError::bad_input(format!(
                    "`filter.search` may be at most {MAX_SEARCH_CHARS} characters"
                )));
            }
            Some(term) => Some(term.to_owned()),
        };
        Ok(PostListFilter {
            author_id,
            search,
            include_drafts: false,
        })
    }
}

#[derive(Default)]
pub struct PostQuery;

#[Object]
impl PostQuery {
    /// A post by id; `null` when there is none.
    async fn post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Post>> {
        let id = ids::parse(&id, "id")?;
        let row = ctx.loaders()?.load_one(PostId(id)).await?;
        Ok(row.map(Post))
    }

    /// Published posts, newest first.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<PostFilter>,
    ) -> async_graphql::Result<Conn<Post>> {
        let page = connection::page_args(first, after.as_deref())?;
        let filter = filter.unwrap_or_default().into_store()?;
        let rows = ctx.store()?.list_posts(&filter, page).await?;
        Ok(connection::build(
            rows,
            page,
            CountOf::Posts(filter),
            |r| r.id,
            Post,
        ))
    }
}
