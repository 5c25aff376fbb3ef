//! Relay connections: opaque cursors, argument checks, and the lazily computed `totalCount`.
//!
//! Pagination is keyset: a cursor carries the id of the last row seen, and the next page is `id < cursor`
//! (posts, newest first) or `id > cursor` (comments and users, oldest first). Pages never use OFFSET, so a page
//! a thousand pages deep costs what the first one does.

use std::borrow::Cow;

use async_graphql::connection::{CursorType, PageInfo};
use async_graphql::{Context, Object, OutputType, TypeName};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::AppError;
use crate::graphql::context::ContextExt;
use crate::graphql::loaders::{AuthorPostCount, CommentCount};
use crate::store::{Page, PostListFilter};

/// The most items one page may hold.
pub const MAX_FIRST: i32 = 100;

/// An opaque cursor: `base64url("v1:<id>")`. The prefix lets the format change without misreading old cursors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(pub i64);

/// A cursor this API did not hand out (or one of an older, unreadable format).
#[derive(Debug, thiserror::Error)]
#[error("`after` is not a cursor this API returned")]
pub struct BadCursor;

impl CursorType for Cursor {
    type Error = BadCursor;

    fn decode_cursor(s: &str) -> Result<Self, Self::Error> {
        let bad = || BadCursor;
        let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| bad())?;
        let id = text
            .strip_prefix("v1:")
            .and_then(|n| n.parse::<i64>().ok())
            .ok_or_else(bad)?;
        Ok(Cursor(id))
    }

    fn encode_cursor(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}", self.0))
    }
}

/// Checks `first` and decodes `after`; the page asks for one extra row to learn whether another page follows.
pub fn page_args(first: i32, after: Option<&str>) -> Result<Page, AppError> {
    if !(0..=MAX_FIRST).contains(&first) {
        return Err(AppError::bad_input(format!(
            "`first` must be between 0 and {MAX_FIRST}, got {first}"
        )));
    }
    let after = after
        .map(Cursor::decode_cursor)
        .transpose()
        .map_err(|e| AppError::bad_input(e.to_string()))?
        .map(|c| c.0);
    Ok(Page {
        after,
        limit: i64::from(first) + 1,
    })
}

/// Complexity of a connection field: its children count once per requested item.
pub fn complexity(first: i32, child_complexity: usize) -> usize {
    usize::try_from(first.clamp(1, MAX_FIRST))
        .unwrap_or(1)
        .saturating_mul(child_complexity)
}

/// What `totalCount` counts. Counted only when the field is selected.
#[derive(Clone, Debug)]
pub enum CountOf {
    Posts(PostListFilter),
    Users,
    AuthorPosts(AuthorPostCount),
    PostComments(i64),
}

/// A page of `N`, named `<N>Connection` in the schema, with the fields of async-graphql's `Connection` (and its
/// descriptions) plus `totalCount`. Folio's own types rather than async-graphql's so that the edge can be
/// `serial` (see `ConnEdge`).
pub struct Conn<N> {
    edges: Vec<ConnEdge<N>>,
    has_previous_page: bool,
    has_next_page: bool,
    count: CountOf,
}

/// An edge of a `Conn`, named `<N>Edge` in the schema.
///
/// Its fields resolve one after another (`serial`): async-graphql otherwise resolves an object's fields through
/// a `FuturesUnordered`, an allocation per field, for every one of a page's edges. Serial is safe only because
/// `cursor` never waits: a field that waited would hold back its later siblings' batches by a round trip (and
/// `node` resolves its whole subtree first). `Conn`, `Post`, `Comment` and `User` have such fields and stay
/// concurrent.
pub struct ConnEdge<N> {
    cursor: Cursor,
    node: N,
}

#[Object(name_type, shareable)]
impl<N: OutputType> Conn<N> {
    /// Information to aid in pagination.
    async fn page_info(&self) -> PageInfo {
        PageInfo {
            has_previous_page: self.has_previous_page,
            has_next_page: self.has_next_page,
            start_cursor: self.edges.first().map(|e| e.cursor.encode_cursor()),
            end_cursor: self.edges.last().map(|e| e.cursor.encode_cursor()),
        }
    }

    /// A list of edges.
    async fn edges(&self) -> &[ConnEdge<N>] {
        &self.edges
    }

    /// A list of nodes.
    async fn nodes(&self) -> Vec<&N> {
        self.edges.iter().map(|e| &e.node).collect()
    }

    /// How many items the whole list holds, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i32> {
        let n = match &self.count {
            CountOf::Posts(filter) => ctx.store()?.count_posts(filter).await?,
            CountOf::Users => ctx.store()?.count_users().await?,
            CountOf::AuthorPosts(key) => ctx.loaders()?.load_one(*key).await?.unwrap_or(0),
            CountOf::PostComments(post) => ctx
                .loaders()?
                .load_one(CommentCount(*post))
                .await?
                .unwrap_or(0),
        };
        Ok(count(n))
    }
}

/// A count as a GraphQL `Int` (32 bits), saturating rather than wrapping.
pub fn count(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl<N: OutputType> TypeName for Conn<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Connection", N::type_name()).into()
    }
}

/// An edge in a connection.
#[Object(name_type, shareable, serial)]
impl<N: OutputType> ConnEdge<N> {
    /// The item at the end of the edge
    async fn node(&self) -> &N {
        &self.node
    }

    /// A cursor for use in pagination
    async fn cursor(&self) -> String {
        self.cursor.encode_cursor()
    }
}

impl<N: OutputType> TypeName for ConnEdge<N> {
    fn type_name() -> Cow<'static, str> {
        format!("{}Edge", N::type_name()).into()
    }
}

/// Builds a connection from `limit` rows as fetched (one more than `first` when another page follows).
pub fn build<R, N: OutputType>(
    rows: Vec<R>,
    page: Page,
    count: CountOf,
    id_of: impl Fn(&R) -> i64,
    node: impl Fn(R) -> N,
) -> Conn<N> {
    let first = page.shown();
    let has_next_page = rows.len() > first;
    Conn {
        edges: rows
            .into_iter()
            .take(first)
            .map(|r| ConnEdge {
                cursor: Cursor(id_of(&r)),
                node: node(r),
            })
            .collect(),
        has_previous_page: page.after.is_some(),
        has_next_page,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor(42).encode_cursor();
        assert_eq!(Cursor::decode_cursor(&c).unwrap(), Cursor(42));
        for bad in [
            "",
            "!!",
            "djE6",
            "eDo0Mg",
            &URL_SAFE_NO_PAD.encode("v1:abc"),
        ] {
            assert!(
                Cursor::decode_cursor(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn first_is_bounded() {
        assert!(page_args(-1, None).is_err());
        assert!(page_args(101, None).is_err());
        assert_eq!(page_args(0, None).unwrap().limit, 1);
        assert_eq!(page_args(100, None).unwrap().limit, 101);
    }
}
