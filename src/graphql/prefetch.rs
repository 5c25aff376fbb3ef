//! Fetching what a page of posts will be asked for together with the page, instead of level by level.
//!
//! The loaders (`loaders.rs`) already make each relation one statement per level, but each level is still a
//! round trip, and every resolver waiting on a batch is woken and polled again when it lands. For a page of
//! posts, the resolver knows from the selection (`ctx.look_ahead()`) what its children will read, so it asks
//! for it up front:
//! - the posts' authors are joined into the page's own statement;
//! - the posts' comments (one page each), their counts and (if selected) their authors come from one more
//!   statement (`Store::comment_pages`).
//!
//! The rows are primed into the request's loaders, and the child resolvers find them there: they run the same
//! code (visibility, cache tags) and finish on their first poll. A selection the plan does not cover (two
//! different `comments` pages, say) is simply left to the loaders, so prefetching changes how many statements
//! run, never what a response holds.

use std::collections::HashMap;

use async_graphql::{Context, Lookahead, Value};

use crate::error::AppError;
use crate::graphql::connection;
use crate::graphql::context::ContextExt;
use crate::graphql::loaders::{CommentCount, Loaders, PostComments, UserId};
use crate::store::{Content, Page, PostListFilter, PostRow, Store};

/// What the selection on a set of posts reads beyond the posts' own columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PostPlan {
    /// `author` is selected.
    authors: bool,
    /// `comments` is selected, always with the same page.
    comments: Option<CommentsPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CommentsPlan {
    page: Page,
    /// `author` is selected on the comments.
    authors: bool,
}

impl PostPlan {
    /// The plan for a post connection field (`edges { node }` and `nodes`).
    pub fn for_connection(ctx: &Context<'_>) -> Self {
        let look = ctx.look_ahead();
        Self::of(&[look.field("edges").field("node"), look.field("nodes")])
    }

    /// The plan for a field returning one post.
    pub fn for_post(ctx: &Context<'_>) -> Self {
        Self::of(&[ctx.look_ahead()])
    }

    /// The plan for the given selections of posts.
    fn of(posts: &[Lookahead<'_>]) -> Self {
        let authors = posts.iter().any(|p| p.field("author").exists());
        let mut pages = Vec::new();
        let mut comment_authors = false;
        for field in posts
            .iter()
            .flat_map(|p| p.field("comments").selection_fields())
        {
            // Arguments that do not read as a page are the resolver's to refuse; nothing is prefetched.
            let Some(page) = comments_page(&field) else {
                return Self {
                    authors,
                    comments: None,
                };
            };
            pages.push(page);
            let comments = Lookahead::from(field);
            comment_authors |= comments
                .field("edges")
                .field("node")
                .field("author")
                .exists()
                || comments.field("nodes").field("author").exists();
        }
        let comments = match pages.split_first() {
            Some((page, rest)) if rest.iter().all(|p| p == page) => Some(CommentsPlan {
                page: *page,
                authors: comment_authors,
            }),
            _ => None,
        };
        Self { authors, comments }
    }

    /// One page of a post list, fetched with what this plan says its posts' children read, which is primed
    /// into the request's loaders.
    pub async fn list_posts(
        &self,
        ctx: &Context<'_>,
        filter: &PostListFilter,
        page: Page,
    ) -> Result<Vec<PostRow>, AppError> {
        let (store, loaders) = (ctx.store()?, ctx.loaders()?);
        let rows = if self.authors {
            let joined = store
                .list_posts_with_authors(filter, page, Content::Read)
                .await?;
            let mut rows = Vec::with_capacity(joined.len());
            for (post, author) in joined {
                loaders.prime(UserId(author.id), author);
                rows.push(post);
            }
            rows
        } else {
            store.list_posts(filter, page, Content::Read).await?
        };
        // The page holds one row more than `first` when another page follows; that row is not shown.
        let shown = page.shown().min(rows.len());
        self.children(store, loaders, &rows[..shown]).await?;
        Ok(rows)
    }

    /// Fetches and primes what this plan says the given (already fetched) posts' children read, apart from
    /// the posts' authors.
    pub async fn children(
        &self,
        store: &Store,
        loaders: &Loaders,
        posts: &[PostRow],
    ) -> Result<(), AppError> {
        let Some(plan) = self.comments else {
            return Ok(());
        };
        let ids: Vec<i64> = posts.iter().map(|p| p.id).collect();
        if ids.is_empty() {
            return Ok(());
        }
        let rows = store.comment_pages(&ids, plan.page, plan.authors).await?;
        let mut pages: HashMap<i64, (Vec<_>, Option<i64>)> = HashMap::with_capacity(ids.len());
        for id in &ids {
            pages.insert(*id, (Vec::new(), None));
        }
        for (comment, total, author) in rows {
            if let Some(author) = author {
                loaders.prime(UserId(author.id), author);
            }
            if let Some((list, count)) = pages.get_mut(&comment.post_id) {
                *count = Some(total);
                list.push(comment);
            }
        }
        for (post_id, (list, count)) in pages {
            // A post without rows has no comments after the cursor; without a cursor, none at all. With one,
            // its count is unknown here and left to the loader.
            let count = count.or(plan.page.after.is_none().then_some(0));
            if let Some(count) = count {
                loaders.prime(CommentCount(post_id), count);
            }
            loaders.prime(
                PostComments {
                    post_id,
                    page: plan.page,
                },
                list,
            );
        }
        Ok(())
    }
}

/// The page a `comments(first:, after:)` selection asks for, as `Post.comments` will read it.
fn comments_page(field: &async_graphql::SelectionField<'_>) -> Option<Page> {
    let mut first = 20;
    let mut after = None;
    for (name, value) in field.arguments().ok()? {
        match (name.as_str(), value) {
            ("first", Value::Number(n)) => first = i32::try_from(n.as_i64()?).ok()?,
            ("after", Value::String(s)) => after = Some(s),
            ("after", Value::Null) => {}
            _ => return None,
        }
    }
    connection::page_args(first, after.as_deref()).ok()
}
