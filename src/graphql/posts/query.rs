//! Post queries: `post` and the `posts` feed.

use async_graphql::{Context, ID, InputObject, Object};

use crate::auth::Viewer;
use crate::error::AppError;
use crate::graphql::connection::{self, Conn, CountOf};
use crate::graphql::context::ContextExt;
use crate::graphql::cost;
use crate::graphql::ids;
use crate::graphql::loaders::PostId;
use crate::graphql::prefetch::PostPlan;
use crate::store::{Drafts, PostListFilter};

use super::{Post, visible_in};
use crate::cache::Tag;

/// Longest accepted search term, in characters.
const MAX_SEARCH_CHARS: usize = 200;

/// Narrows the `posts` feed.
#[derive(InputObject, Default)]
pub struct PostFilter {
    /// Only posts by this author.
    pub author_id: Option<ID>,
    /// Case-insensitive text to find in the title or the content.
    pub search: Option<String>,
    /// Also list drafts the viewer may see: their own, or every draft for an admin. For anyone else this
    /// changes nothing (drafts they may not see are indistinguishable from missing posts).
    #[graphql(default_with = "Some(false)")]
    pub drafts: Option<bool>,
}

impl PostFilter {
    /// Checks the filter and turns it into the store's form, deciding which drafts the viewer may list. The
    /// viewer is consulted only when drafts are asked for: only then does the list depend on who asks.
    pub(crate) fn into_store<'a>(
        self,
        viewer: impl FnOnce() -> &'a Viewer,
    ) -> Result<PostListFilter, AppError> {
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
            Some(term) if term.contains('\0') => {
                return Err(AppError::bad_input(
                    "`filter.search` must not contain the NUL character",
                ));
            }
            Some(term) => Some(term.to_owned()),
        };
        let drafts = match self.drafts.unwrap_or(false) {
            false => Drafts::Exclude,
            true => match viewer() {
                Viewer::Anonymous => Drafts::Exclude,
                v if v.is_admin() => Drafts::All,
                Viewer::User { id, .. } => Drafts::OfAuthor(*id),
            },
        };
        Ok(PostListFilter {
            author_id,
            search,
            drafts,
        })
    }
}

#[derive(Default)]
pub struct PostQuery;

#[Object]
impl PostQuery {
    /// A post by id; `null` when there is none, or when it is a draft the viewer may not see.
    async fn post(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Post>> {
        let id = ids::parse(&id, "id")?;
        // Tagged even when null: creating or publishing this post must purge a cached `null`.
        ctx.tag(Tag::Post(id));
        let loaders = ctx.loaders()?;
        let Some(row) = loaders
            .load_one(PostId(id))
            .await?
            .filter(|r| visible_in(ctx, r))
        else {
            return Ok(None);
        };
        PostPlan::for_post(ctx)
            .children(ctx.store()?, loaders, std::slice::from_ref(&row))
            .await?;
        Ok(Some(Post(row)))
    }

    /// Published posts, newest first (with `filter.drafts`, also the drafts the viewer may see).
    #[graphql(
        complexity = "connection::complexity(first, child_complexity)",
        directive = cost::list_size::apply(None, cost::by_first(), cost::edges_and_nodes())
    )]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
        filter: Option<PostFilter>,
    ) -> async_graphql::Result<Conn<Post>> {
        let page = connection::page_args(first, after.as_deref())?;
        let filter = filter.unwrap_or_default().into_store(|| ctx.viewer())?;
        let rows = PostPlan::for_connection(ctx)
            .list_posts(ctx, &filter, page)
            .await?;
        ctx.tag(Tag::PostList);
        for row in &rows {
            ctx.tag(Tag::Post(row.id));
        }
        Ok(connection::build(
            rows,
            page,
            CountOf::Posts(filter),
            |r| r.id,
            Post,
        ))
    }
}
