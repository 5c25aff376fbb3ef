//! The published feed with what a page of it shows, in one statement: for compiled operations.
//!
//! `posts` through the resolvers costs two statements (the page with its authors, then the comment pages: see
//! `graphql/prefetch.rs`) and decodes every column of every row into the loaders' full rows. A compiled
//! operation (`graphql/compiled`) knows exactly which fields it writes, so it asks for the page, the posts'
//! authors, their comment counts and one page of comments each with their authors at once, and only for the
//! columns it shows: a column it does not need (a post's `content`, about 700 bytes) is a typed `NULL`.
//!
//! The rows come post by post in feed order (newest first), each post's comments oldest first; a post without
//! comments (or whose comments are all before the cursor) is one row without a comment.
//!
//! On PostgreSQL every part is a `LATERAL` lookup that reads only the rows it returns (as in
//! `comment_pages`). SQLite, which has no `LATERAL`, numbers the page's comments in a window.

use chrono::{DateTime, Utc};

use super::{Db, Page, Role, Store, from_columns};
use crate::error::AppError;

/// What a compiled page of the feed reads besides each post's small columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedQuery {
    /// The page of posts: `limit` is one more than shown, to learn whether another page follows.
    pub page: Page,
    /// Each post's `content`.
    pub content: bool,
    /// Each post's author.
    pub authors: bool,
    /// Each post's number of comments (all of them, whatever the comment page).
    pub counts: bool,
    /// One page of comments per post.
    pub comments: Option<FeedComments>,
}

/// The comment page of a `FeedQuery`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedComments {
    /// `limit` is one more than shown, as for posts.
    pub page: Page,
    /// Each comment's author.
    pub authors: bool,
}

/// A post of the feed, without its `content` unless asked for.
#[derive(Debug)]
pub struct FeedPost {
    pub id: i64,
    pub author_id: i64,
    pub title: String,
    pub content: Option<String>,
    pub published: bool,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An author's public columns (the id is the post's or comment's `author_id`).
#[derive(Debug)]
pub struct FeedUser {
    pub id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug)]
pub struct FeedComment {
    pub id: i64,
    pub author_id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub author: Option<FeedUser>,
}

/// One row of a feed page: a post (repeated for each of its comments) and at most one comment.
#[derive(Debug)]
pub struct FeedRow {
    pub post: FeedPost,
    pub author: Option<FeedUser>,
    pub comment_count: Option<i64>,
    pub comment: Option<FeedComment>,
}

/// Reads an author's three columns, all `NULL` when the author was not asked for (or there is no comment).
fn read_user<'r, R: sqlx::Row>(
    cols: &mut super::Columns<'r, R>,
    id: Option<i64>,
) -> Result<Option<FeedUser>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    Option<&'r str>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let name: Option<String> = cols.next()?;
    let role: Option<&str> = cols.next()?;
    let created_at: Option<DateTime<Utc>> = cols.next()?;
    Ok(match (id, name, role, created_at) {
        (Some(id), Some(name), Some(role), Some(created_at)) => Some(FeedUser {
            id,
            name,
            role: Role::try_from(role).map_err(|e| sqlx::Error::ColumnDecode {
                index: "role".to_owned(),
                source: Box::new(e),
            })?,
            created_at,
        }),
        _ => None,
    })
}

from_columns!(FeedRow, |cols| {
    let post = FeedPost {
        id: cols.next()?,
        author_id: cols.next()?,
        title: cols.next()?,
        content: cols.next()?,
        published: cols.next()?,
        published_at: cols.next()?,
        created_at: cols.next()?,
        updated_at: cols.next()?,
    };
    let author = read_user(&mut cols, Some(post.author_id))?;
    let comment_count = cols.next()?;
    let id: Option<i64> = cols.next()?;
    let author_id: Option<i64> = cols.next()?;
    let body: Option<String> = cols.next()?;
    let created_at: Option<DateTime<Utc>> = cols.next()?;
    let comment_author = read_user(&mut cols, author_id)?;
    let comment = match (id, author_id, body, created_at) {
        (Some(id), Some(author_id), Some(body), Some(created_at)) => Some(FeedComment {
            id,
            author_id,
            body,
            created_at,
            author: comment_author,
        }),
        _ => None,
    };
    Ok(FeedRow {
        post,
        author,
        comment_count,
        comment,
    })
});

/// The parts of the statement that depend on the dialect. Every part is fixed text: the statement is put
/// together from these and from nothing a client sent (the cursors and limits are bind parameters).
struct Dialect {
    /// What precedes the `SELECT` (a common table expression).
    with: &'static str,
    /// The page of posts, as a row source named `p`: `$1` is the cursor, `$2` the limit.
    posts: &'static str,
    content: [&'static str; 2],
    /// Author columns (`name, role, created_at`) of the post and of the comment: selected, or typed NULLs.
    post_author: [&'static str; 2],
    comment_author: [&'static str; 2],
    count: [&'static str; 2],
    comment: [&'static str; 2],
    /// Joins, each empty when not needed.
    join_post_author: &'static str,
    join_count: &'static str,
    /// `$3` is the comment cursor, `$4` the comment limit.
    join_comments: &'static str,
    join_comment_author: &'static str,
}

const POSTGRES: Dialect = Dialect {
    with: "",
    posts: "(SELECT * FROM posts WHERE published = TRUE AND id < $1 ORDER BY id DESC LIMIT $2) p",
    content: ["NULL::text", "p.content"],
    post_author: [
        "NULL::text, NULL::text, NULL::timestamptz",
        "pu.name, pu.role, pu.created_at",
    ],
    comment_author: [
        "NULL::text, NULL::text, NULL::timestamptz",
        "cu.name, cu.role, cu.created_at",
    ],
    count: ["NULL::bigint", "n.total"],
    comment: [
        "NULL::bigint, NULL::bigint, NULL::text, NULL::timestamptz",
        "c.id, c.author_id, c.body, c.created_at",
    ],
    join_post_author: " CROSS JOIN LATERAL (SELECT name, role, created_at FROM users WHERE users.id = p.author_id) pu",
    join_count: " CROSS JOIN LATERAL (SELECT COUNT(*) AS total FROM comments WHERE post_id = p.id) n",
    join_comments: " LEFT JOIN LATERAL (SELECT id, author_id, body, created_at FROM comments WHERE post_id = p.id AND id > $3 ORDER BY id LIMIT $4) c ON true",
    join_comment_author: " LEFT JOIN LATERAL (SELECT name, role, created_at FROM users WHERE users.id = c.author_id) cu ON true",
};

/// SQLite walks the feed's partial index (see `post_page`) once, into `p`; the comments after the cursor are
/// numbered per post in a window over the page's posts only. (`INDEXED BY` inside the `IN` subqueries has
/// no plan: SQLite answers "no query solution".)
const SQLITE: Dialect = Dialect {
    with: "WITH p AS MATERIALIZED (SELECT * FROM posts INDEXED BY posts_published_feed WHERE published = TRUE AND id < $1 ORDER BY id DESC LIMIT $2) ",
    posts: "p",
    content: ["NULL", "p.content"],
    post_author: ["NULL, NULL, NULL", "pu.name, pu.role, pu.created_at"],
    comment_author: ["NULL, NULL, NULL", "cu.name, cu.role, cu.created_at"],
    count: ["NULL", "COALESCE(n.total, 0)"],
    comment: [
        "NULL, NULL, NULL, NULL",
        "c.id, c.author_id, c.body, c.created_at",
    ],
    join_post_author: " JOIN users pu ON pu.id = p.author_id",
    join_count: " LEFT JOIN (SELECT post_id, COUNT(*) AS total FROM comments WHERE post_id IN (SELECT id FROM p) GROUP BY post_id) n ON n.post_id = p.id",
    join_comments: " LEFT JOIN (SELECT id, post_id, author_id, body, created_at, ROW_NUMBER() OVER (PARTITION BY post_id ORDER BY id) AS rn FROM comments WHERE id > $3 AND post_id IN (SELECT id FROM p)) c ON c.post_id = p.id AND c.rn <= $4",
    join_comment_author: " LEFT JOIN users cu ON cu.id = c.author_id",
};

impl Dialect {
    fn statement(&self, q: &FeedQuery) -> String {
        let comments = q.comments.is_some();
        let comment_authors = q.comments.is_some_and(|c| c.authors);
        let pick = |parts: &[&'static str; 2], on: bool| parts[usize::from(on)];
        let when = |part: &'static str, on: bool| if on { part } else { "" };
        format!(
            "{}SELECT p.id, p.author_id, p.title, {}, p.published, p.published_at, p.created_at, p.updated_at, \
             {}, {}, {}, {} FROM {}{}{}{}{} ORDER BY p.id DESC{}",
            self.with,
            pick(&self.content, q.content),
            pick(&self.post_author, q.authors),
            pick(&self.count, q.counts),
            pick(&self.comment, comments),
            pick(&self.comment_author, comment_authors),
            self.posts,
            when(self.join_post_author, q.authors),
            when(self.join_count, q.counts),
            when(self.join_comments, comments),
            when(self.join_comment_author, comment_authors),
            when(", c.id", comments),
        )
    }
}

impl Store {
    /// A page of the published feed with what `q` asks for, in one statement (see the module header).
    pub async fn feed(&self, q: &FeedQuery) -> Result<Vec<FeedRow>, AppError> {
        let after = q.page.after.unwrap_or(i64::MAX);
        let (comment_after, comment_limit) = q
            .comments
            .map_or((0, 0), |c| (c.page.after.unwrap_or(0), c.page.limit));
        self.count(1);
        let rows = match &self.db {
            Db::Postgres(pool) => {
                let sql = POSTGRES.statement(q);
                let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(after)
                    .bind(q.page.limit);
                let query = if q.comments.is_some() {
                    query.bind(comment_after).bind(comment_limit)
                } else {
                    query
                };
                query.fetch_all(pool).await
            }
            Db::Sqlite(pool) => {
                let sql = SQLITE.statement(q);
                let query = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(after)
                    .bind(q.page.limit);
                let query = if q.comments.is_some() {
                    query.bind(comment_after).bind(comment_limit)
                } else {
                    query
                };
                query.fetch_all(pool).await
            }
        };
        Ok(rows?)
    }
}
