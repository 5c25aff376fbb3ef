//! Running a compiled operation: its variables checked, one statement, the response written as JSON.
//!
//! The JSON is the executor's for the same request (tests compare them): strings escaped by serde_json as
//! async-graphql's serialisation does, dates in RFC 3339, ids as strings. Fields come in selection order, as
//! the GraphQL spec asks; the executor writes each object's fields in the order they finish resolving.

use std::io::{self, Write};

use async_graphql::Value;
use async_graphql::Variables;
use async_graphql::connection::CursorType;

use super::{
    Args, CommentField, Conn, ConnField, EdgeField, Key, PageInfoField, Plan, PostField, Source,
    UserField,
};
use crate::cache::{Tracker, tags};
use crate::graphql::connection::{self, Cursor};
use crate::store::{
    FeedComment, FeedComments, FeedPost, FeedQuery, FeedRow, FeedUser, Page, Role, Store,
};

/// A compiled operation's response body.
pub struct Output {
    pub body: Vec<u8>,
}

/// A post of the page with what was fetched for it.
struct PostOut {
    post: FeedPost,
    author: Option<FeedUser>,
    count: i64,
    comments: Vec<FeedComment>,
}

/// What a run needs besides the plan: the pages as resolved from this request's variables.
struct Pages {
    posts: Page,
    comments: Option<Page>,
}

impl Plan {
    /// Runs the plan for a request with `variables`, recording what it read in `tracker`. `None` when this
    /// request should run on the executor instead (see the module header): nothing has been written then.
    pub async fn run(
        &self,
        store: &Store,
        variables: &Variables,
        max_complexity: usize,
        tracker: Option<&Tracker>,
    ) -> Option<Output> {
        let (pages, complexity) = self.pages(variables)?;
        if complexity > max_complexity {
            return None;
        }
        let reads = &self.reads;
        let query = FeedQuery {
            page: pages.posts,
            content: reads.content,
            post_details: reads.post_details,
            authors: reads.authors,
            author_details: reads.author_details,
            counts: reads.counts,
            comments: pages.comments.map(|page| FeedComments {
                page,
                authors: reads.comment_authors,
                dates: reads.comment_dates,
            }),
        };
        let rows = match store.feed(&query).await {
            Ok(rows) => rows,
            Err(err) => {
                tracing::warn!(error = ?err, "compiled feed statement failed; running on the executor");
                return None;
            }
        };
        let page = group(rows);
        if let Some(tracker) = tracker {
            record(tracker, &page, &query);
        }
        let mut body = Vec::with_capacity(4096 + page.len() * 1024);
        self.write(&mut body, &page, &pages).ok()?;
        Some(Output { body })
    }

    /// Resolves the pages from `variables`, checking what validation would check of them, and the operation's
    /// complexity with them. `None`: leave the request to the executor.
    fn pages(&self, variables: &Variables) -> Option<(Pages, usize)> {
        let posts = self.page_of(&self.page, variables)?;
        let mut comments: Option<(i32, Page)> = None;
        for args in &self.comment_pages {
            let page = self.page_of(args, variables)?;
            // Two differing comment pages are the executor's (a compiled run fetches one per post).
            if comments.is_some_and(|c| c != page) {
                return None;
            }
            comments = Some(page);
        }
        let complexity = self.complexity(posts.0, comments.map(|c| c.0));
        let pages = Pages {
            posts: posts.1,
            comments: comments.map(|c| c.1),
        };
        Some((pages, complexity))
    }

    /// A connection's `first` (for the complexity) and page, from its arguments.
    fn page_of(&self, args: &Args, variables: &Variables) -> Option<(i32, Page)> {
        let first = match self.value(&args.first, variables)? {
            None => 20,
            Some(Value::Number(n)) => i32::try_from(n.as_i64()?).ok()?,
            Some(_) => return None,
        };
        let after = match self.value(&args.after, variables)? {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s),
            Some(_) => return None,
        };
        let page = connection::page_args(first, after.as_deref()).ok()?;
        Some((first, page))
    }

    /// An argument's value: `Some(None)` when absent (the argument's default applies), `None` when the request
    /// should go to the executor (a variable that may not be omitted was).
    fn value(&self, source: &Source, variables: &Variables) -> Option<Option<Value>> {
        match source {
            Source::Absent => Some(None),
            Source::Literal(v) => Some(Some(v.clone())),
            Source::Variable(name) => {
                if let Some(v) = variables.get(name) {
                    return Some(Some(v.clone()));
                }
                let (_, default) = self.variables.iter().find(|(n, _)| n == name)?;
                default.clone().map(Some)
            }
        }
    }

    /// The operation's complexity as async-graphql computes it: each field costs one plus its children, a
    /// connection `first.clamp(1, 100)` times its children (`connection::complexity`), and `__typename`
    /// nothing (it is not among a type's fields in the registry, and the visitor does not count it).
    fn complexity(&self, posts_first: i32, comments_first: Option<i32>) -> usize {
        let user = |fields: &Vec<Key<UserField>>| {
            1 + fields
                .iter()
                .filter(|f| !matches!(f.field, UserField::Typename))
                .count()
        };
        let comment = |fields: &Vec<Key<CommentField>>| {
            fields
                .iter()
                .map(|f| match &f.field {
                    CommentField::Typename => 0,
                    CommentField::Author(u) => user(u),
                    _ => 1,
                })
                .sum::<usize>()
        };
        let post = |fields: &Vec<Key<PostField>>| {
            fields
                .iter()
                .map(|f| match &f.field {
                    PostField::Typename => 0,
                    PostField::Author(u) => user(u),
                    PostField::Comments(_, conn) => {
                        connection::complexity(comments_first.unwrap_or(20), conn.cost(comment))
                    }
                    _ => 1,
                })
                .sum::<usize>()
        };
        connection::complexity(posts_first, self.conn.cost(post))
    }

    fn write(&self, out: &mut Vec<u8>, page: &[PostOut], pages: &Pages) -> io::Result<()> {
        out.extend_from_slice(b"{\"data\":{");
        let mut written = 0;
        for (_, k) in self.typename.iter().filter(|(after, _)| !after) {
            comma(out, written);
            key(out, k);
            string(out, "Query")?;
            written += 1;
        }
        comma(out, written);
        key(out, &self.key);
        let shown = pages.posts.shown();
        self.conn.write(
            out,
            "Post",
            &page[..shown.min(page.len())],
            page.len() > shown,
            pages.posts,
            None,
            |p| p.post.id,
            |out, p, fields| write_post(out, p, fields, pages),
        )?;
        for (_, k) in self.typename.iter().filter(|(after, _)| *after) {
            out.push(b',');
            key(out, k);
            string(out, "Query")?;
        }
        out.extend_from_slice(b"}}");
        Ok(())
    }
}

impl<N> Conn<N> {
    /// The complexity of the connection's selection, `node` being that of one node's selection.
    fn cost(&self, node: impl Fn(&N) -> usize) -> usize {
        self.fields
            .iter()
            .map(|f| match &f.field {
                ConnField::Edges(edges) => {
                    1 + edges
                        .iter()
                        .map(|e| match &e.field {
                            EdgeField::Node(n) => 1 + node(n),
                            EdgeField::Cursor => 1,
                            EdgeField::Typename => 0,
                        })
                        .sum::<usize>()
                }
                ConnField::Nodes(n) => 1 + node(n),
                ConnField::PageInfo(p) => {
                    1 + p
                        .iter()
                        .filter(|f| !matches!(f.field, PageInfoField::Typename))
                        .count()
                }
                ConnField::TotalCount => 1,
                ConnField::Typename => 0,
            })
            .sum()
    }

    /// Writes the connection object over `items` (the shown ones).
    #[allow(clippy::too_many_arguments)]
    fn write<T>(
        &self,
        out: &mut Vec<u8>,
        node_type: &str,
        items: &[T],
        has_next_page: bool,
        page: Page,
        total: Option<i64>,
        id: impl Fn(&T) -> i64,
        node: impl Fn(&mut Vec<u8>, &T, &N) -> io::Result<()>,
    ) -> io::Result<()> {
        out.push(b'{');
        for (i, f) in self.fields.iter().enumerate() {
            comma(out, i);
            key(out, &f.key);
            match &f.field {
                ConnField::Typename => string(out, &format!("{node_type}Connection"))?,
                // Only comment connections compile with `totalCount` (see `Plan::compile`).
                ConnField::TotalCount => {
                    let total = total.ok_or_else(|| io::Error::other("no total for this list"))?;
                    number(out, total)?;
                }
                ConnField::Nodes(n) => list(out, items, |out, item| node(out, item, n))?,
                ConnField::Edges(edges) => list(out, items, |out, item| {
                    out.push(b'{');
                    for (j, e) in edges.iter().enumerate() {
                        comma(out, j);
                        key(out, &e.key);
                        match &e.field {
                            EdgeField::Typename => string(out, &format!("{node_type}Edge"))?,
                            EdgeField::Cursor => string(out, &Cursor(id(item)).encode_cursor())?,
                            EdgeField::Node(n) => node(out, item, n)?,
                        }
                    }
                    out.push(b'}');
                    Ok(())
                })?,
                ConnField::PageInfo(fields) => {
                    out.push(b'{');
                    for (j, p) in fields.iter().enumerate() {
                        comma(out, j);
                        key(out, &p.key);
                        let cursor = |item: Option<&T>| item.map(|t| Cursor(id(t)).encode_cursor());
                        match p.field {
                            PageInfoField::Typename => string(out, "PageInfo")?,
                            PageInfoField::HasNextPage => boolean(out, has_next_page),
                            PageInfoField::HasPreviousPage => boolean(out, page.after.is_some()),
                            PageInfoField::StartCursor => opt_string(out, cursor(items.first()))?,
                            PageInfoField::EndCursor => opt_string(out, cursor(items.last()))?,
                        }
                    }
                    out.push(b'}');
                }
            }
        }
        out.push(b'}');
        Ok(())
    }
}

fn write_post(
    out: &mut Vec<u8>,
    p: &PostOut,
    fields: &[Key<PostField>],
    pages: &Pages,
) -> io::Result<()> {
    let missing = || io::Error::other("a compiled row lacks a selected column");
    out.push(b'{');
    for (i, f) in fields.iter().enumerate() {
        comma(out, i);
        key(out, &f.key);
        match &f.field {
            PostField::Typename => string(out, "Post")?,
            PostField::Id => id(out, p.post.id)?,
            PostField::Title => string(out, &p.post.title)?,
            PostField::Content => string(out, p.post.content.as_deref().ok_or_else(missing)?)?,
            PostField::Published => boolean(out, p.post.published.ok_or_else(missing)?),
            PostField::PublishedAt => opt_string(out, p.post.published_at.map(|t| t.to_rfc3339()))?,
            PostField::CreatedAt => {
                string(out, &p.post.created_at.ok_or_else(missing)?.to_rfc3339())?
            }
            PostField::UpdatedAt => {
                string(out, &p.post.updated_at.ok_or_else(missing)?.to_rfc3339())?
            }
            PostField::CommentCount => number(out, connection::count(p.count).into())?,
            PostField::Author(user) => {
                write_user(out, p.author.as_ref().ok_or_else(missing)?, user)?
            }
            PostField::Comments(_, conn) => {
                let page = pages.comments.ok_or_else(missing)?;
                let shown = page.shown().min(p.comments.len());
                let total = connection::count(p.count).into();
                conn.write(
                    out,
                    "Comment",
                    &p.comments[..shown],
                    p.comments.len() > shown,
                    page,
                    Some(total),
                    |c| c.id,
                    |out, c, fields| write_comment(out, c, fields),
                )?;
            }
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_comment(
    out: &mut Vec<u8>,
    c: &FeedComment,
    fields: &[Key<CommentField>],
) -> io::Result<()> {
    out.push(b'{');
    for (i, f) in fields.iter().enumerate() {
        comma(out, i);
        key(out, &f.key);
        match &f.field {
            CommentField::Typename => string(out, "Comment")?,
            CommentField::Id => id(out, c.id)?,
            CommentField::Body => string(out, &c.body)?,
            CommentField::CreatedAt => string(
                out,
                &c.created_at
                    .ok_or_else(|| io::Error::other("a compiled comment lacks its date"))?
                    .to_rfc3339(),
            )?,
            CommentField::Author(user) => {
                let author = c
                    .author
                    .as_ref()
                    .ok_or_else(|| io::Error::other("a compiled comment lacks its author"))?;
                write_user(out, author, user)?;
            }
        }
    }
    out.push(b'}');
    Ok(())
}

fn write_user(out: &mut Vec<u8>, u: &FeedUser, fields: &[Key<UserField>]) -> io::Result<()> {
    let missing = || io::Error::other("a compiled author lacks a selected column");
    out.push(b'{');
    for (i, f) in fields.iter().enumerate() {
        comma(out, i);
        key(out, &f.key);
        match f.field {
            UserField::Typename => string(out, "User")?,
            UserField::Id => id(out, u.id)?,
            UserField::Name => string(out, &u.name)?,
            UserField::Role => string(
                out,
                match u.role.ok_or_else(missing)? {
                    Role::User => "USER",
                    Role::Admin => "ADMIN",
                },
            )?,
            UserField::CreatedAt => string(out, &u.created_at.ok_or_else(missing)?.to_rfc3339())?,
        }
    }
    out.push(b'}');
    Ok(())
}

/// The statement's rows, one entry per post in feed order, each with its comments.
fn group(rows: Vec<FeedRow>) -> Vec<PostOut> {
    let mut out: Vec<PostOut> = Vec::new();
    for row in rows {
        let same = out.last().is_some_and(|p| p.post.id == row.post.id);
        if !same {
            out.push(PostOut {
                post: row.post,
                author: row.author,
                count: row.comment_count.unwrap_or(0),
                comments: Vec::new(),
            });
        }
        if let (Some(comment), Some(last)) = (row.comment, out.last_mut()) {
            last.comments.push(comment);
        }
    }
    out
}

/// Records the tags the executor's resolvers would have recorded for the same response (a few more at
/// most, which can only purge it sooner).
fn record(tracker: &Tracker, page: &[PostOut], query: &FeedQuery) {
    tracker.tag(tags::POST_LIST.to_owned());
    for p in page {
        tracker.tag(tags::post(p.post.id));
        if query.authors {
            tracker.tag(tags::user(p.post.author_id));
        }
        if query.counts || query.comments.is_some() {
            tracker.tag(tags::post_comments(p.post.id));
        }
        // A comment page needs only its post's `post_comments` tag, above (`tags::comment_changed`).
        for c in &p.comments {
            if c.author.is_some() {
                tracker.tag(tags::user(c.author_id));
            }
        }
    }
}

fn key(out: &mut Vec<u8>, key: &str) {
    // Response keys are GraphQL names (`[_A-Za-z][_0-9A-Za-z]*`): nothing to escape.
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn comma(out: &mut Vec<u8>, index: usize) {
    if index > 0 {
        out.push(b',');
    }
}

fn string(out: &mut Vec<u8>, s: &str) -> io::Result<()> {
    serde_json::to_writer(out, s).map_err(io::Error::other)
}

fn opt_string(out: &mut Vec<u8>, s: Option<String>) -> io::Result<()> {
    match s {
        Some(s) => string(out, &s),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

fn id(out: &mut Vec<u8>, id: i64) -> io::Result<()> {
    // An `ID` is a string.
    write!(out, "\"{id}\"")
}

fn number(out: &mut Vec<u8>, n: i64) -> io::Result<()> {
    write!(out, "{n}")
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

fn list<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut each: impl FnMut(&mut Vec<u8>, &T) -> io::Result<()>,
) -> io::Result<()> {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        comma(out, i);
        each(out, item)?;
    }
    out.push(b']');
    Ok(())
}

#[cfg(test)]
mod tests {
    use async_graphql::{CacheControl, Request};
    use serde_json::json;

    use super::*;
    use crate::graphql::{Limits, build_schema};

    /// The complexity async-graphql's validation computes for `query`: the smallest limit it accepts it under.
    async fn executor_complexity(query: &str, variables: &serde_json::Value) -> usize {
        let accepts = |limit: usize| async move {
            let schema = build_schema(
                None,
                Limits {
                    max_depth: usize::MAX,
                    max_complexity: limit,
                    max_directives: usize::MAX,
                    introspection: true,
                    suggestions: true,
                },
            );
            let request = Request::new(query).variables(Variables::from_json(variables.clone()));
            let response = schema.execute(request).await;
            !response
                .errors
                .iter()
                .any(|e| e.message.contains("too complex"))
        };
        let (mut low, mut high) = (1, 1_000_000);
        assert!(accepts(high).await, "{query}");
        while low < high {
            let mid = (low + high) / 2;
            if accepts(mid).await {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        low
    }

    #[tokio::test]
    async fn complexity_is_the_executors() {
        let cases = [
            (
                "query($n: Int!) { posts(first: $n) { edges { node { id title author { name } commentCount
                 comments(first: 5) { edges { node { body author { name } } } } } } pageInfo { hasNextPage endCursor } } }",
                json!({ "n": 20 }),
            ),
            (
                "query($n: Int!) { posts(first: $n) { edges { node { id } } } }",
                json!({ "n": 0 }),
            ),
            (
                "query($c: Int) { __typename posts { __typename edges { __typename cursor node { __typename id
                 writer: author { __typename id name role createdAt } comments(first: $c) { __typename totalCount
                 pageInfo { __typename hasNextPage hasPreviousPage startCursor endCursor }
                 edges { cursor node { __typename id body createdAt author { id } } } nodes { id } } } }
                 nodes { id t: title } pageInfo { hasNextPage } } after: __typename }",
                json!({ "c": 7 }),
            ),
            (
                "{ posts(first: 100) { nodes { content published publishedAt createdAt updatedAt comments { nodes { id } } } } }",
                json!({}),
            ),
        ];
        for (query, variables) in cases {
            let doc = async_graphql::parser::parse_query(query).unwrap();
            let plan = Plan::compile(&doc, None, CacheControl::default())
                .unwrap_or_else(|| panic!("compiles: {query}"));
            let (_, ours) = plan
                .pages(&Variables::from_json(variables.clone()))
                .unwrap();
            assert_eq!(
                ours,
                executor_complexity(query, &variables).await,
                "{query}"
            );
        }
    }
}
