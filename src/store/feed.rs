//! The published feed with what a page of it shows, in one statement: for compiled operations.
//!
//! `posts` through the resolvers costs two statements (the page with its authors, then the comment pages: see
//! `graphql/prefetch.rs`) and decodes every column of every row into the loaders' full rows. A compiled
//! operation (`graphql/compiled`) knows exactly which fields it writes, so it asks for the page, the posts'
//! authors, their comment counts and one page of comments each with their authors at once, and only for the
//! columns it shows: a column it does not need (a post's `content`, about 700 bytes) is a typed `NULL`.
//!
//! `Store::feed` returns the rows post by post in feed order (newest first), each post's comments oldest first;
//! a post without comments (or whose comments are all before the cursor) is one row without a comment.
//!
//! On PostgreSQL every part is a `LATERAL` lookup that reads only the rows it returns (as in
//! `comment_pages`). SQLite, which has no `LATERAL`, numbers the page's comments in a window. See `statement`
//! for why the page sizes are in the text.

use chrono::{DateTime, Utc};

use super::{Db, Page, Role, Store, from_columns, with_pool};
use crate::error::AppError;

/// What a compiled page of the feed reads besides each post's small columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedQuery {
    /// The page of posts: `limit` is one more than shown, to learn whether another page follows.
    pub page: Page,
    /// Each post's `content`.
    pub content: bool,
    /// Each post's `published`, `published_at`, `created_at` and `updated_at`.
    pub post_details: bool,
    /// Each post's author.
    pub authors: bool,
    /// The authors' (of posts and comments) `role` and `created_at`, besides their name.
    pub author_details: bool,
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
    /// Each comment's `created_at`.
    pub dates: bool,
}

/// A post of the feed; the optional columns are `None` unless the `FeedQuery` asked for them.
#[derive(Debug)]
pub struct FeedPost {
    pub id: i64,
    pub author_id: i64,
    pub title: String,
    pub content: Option<String>,
    pub published: Option<bool>,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// An author's public columns (the id is the post's or comment's `author_id`); `role` and `created_at` only
/// with `FeedQuery::author_details`.
#[derive(Debug)]
pub struct FeedUser {
    pub id: i64,
    pub name: String,
    pub role: Option<Role>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct FeedComment {
    pub id: i64,
    pub author_id: i64,
    pub body: String,
    /// Only with `FeedComments::dates`.
    pub created_at: Option<DateTime<Utc>>,
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

/// Reads an author's three columns (`{alias}_name`, `{alias}_role`, `{alias}_created_at`: see `user_columns`):
/// all `NULL` when the author was not asked for (or there is no comment), the last two when only the name was.
fn read_user<'r, R: sqlx::Row>(
    cols: &mut super::Columns<'r, R>,
    names: [&str; 3],
    id: Option<i64>,
) -> Result<Option<FeedUser>, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    Option<&'r str>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let [name_col, role_col, created_col] = names;
    let name: Option<String> = cols.next(name_col)?;
    let role: Option<&str> = cols.next(role_col)?;
    let created_at: Option<DateTime<Utc>> = cols.next(created_col)?;
    let role = role
        .map(str::parse::<Role>)
        .transpose()
        .map_err(|e| sqlx::Error::ColumnDecode {
            index: role_col.to_owned(),
            source: Box::new(e),
        })?;
    Ok(match (id, name) {
        (Some(id), Some(name)) => Some(FeedUser {
            id,
            name,
            role,
            created_at,
        }),
        _ => None,
    })
}

from_columns!(FeedRow, |cols| {
    let post = FeedPost {
        id: cols.next("id")?,
        author_id: cols.next("author_id")?,
        title: cols.next("title")?,
        content: cols.next("content")?,
        published: cols.next("published")?,
        published_at: cols.next("published_at")?,
        created_at: cols.next("created_at")?,
        updated_at: cols.next("updated_at")?,
    };
    let author = read_user(
        &mut cols,
        ["pu_name", "pu_role", "pu_created_at"],
        Some(post.author_id),
    )?;
    let comment_count = cols.next("comment_count")?;
    let id: Option<i64> = cols.next("c_id")?;
    let author_id: Option<i64> = cols.next("c_author_id")?;
    let body: Option<String> = cols.next("c_body")?;
    let created_at: Option<DateTime<Utc>> = cols.next("c_created_at")?;
    let comment_author = read_user(
        &mut cols,
        ["cu_name", "cu_role", "cu_created_at"],
        author_id,
    )?;
    let comment = match (id, author_id, body) {
        (Some(id), Some(author_id), Some(body)) => Some(FeedComment {
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

/// The statement for `q` on one backend, and its bind values in order.
///
/// The page sizes are part of the text (integers Folio computed, at most 101), and a cursor is a condition only
/// when there is one. PostgreSQL plans a prepared statement with parameters afresh on every execution when its
/// generic plan looks worse than the custom ones, which for this statement it does (a `LIMIT $n` might be
/// anything): planning then cost about as much as running it. Without parameters, as for the first page of
/// the feed, the statement is planned once per connection; with a cursor, the plan stays good. Each page size
/// is its own prepared statement, and clients use a few.
///
/// Children are read only for the shown posts: the extra post that tells whether another page follows gets
/// neither its comments nor its count.
fn statement(sqlite: bool, q: &FeedQuery) -> (String, Vec<i64>) {
    let mut binds = Vec::new();
    let mut bind = |v: i64| {
        binds.push(v);
        format!("${}", binds.len())
    };
    let shown = q.page.limit - 1;
    let cursor = match q.page.after {
        Some(after) => format!(" AND id < {}", bind(after)),
        None => String::new(),
    };
    let feed = format!(
        "SELECT * FROM posts{} WHERE published = TRUE{cursor} ORDER BY id DESC LIMIT {}",
        if sqlite {
            " INDEXED BY posts_published_feed"
        } else {
            ""
        },
        q.page.limit
    );
    // The post's position in the page, to leave the extra one's children out.
    let numbered =
        format!("SELECT f.*, ROW_NUMBER() OVER (ORDER BY f.id DESC) AS n FROM ({feed}) f");
    let comment_cursor = match q.comments.and_then(|c| c.page.after) {
        Some(after) => format!(" AND id > {}", bind(after)),
        None => String::new(),
    };
    let comment_limit = q.comments.map_or(0, |c| c.page.limit);
    let comment_authors = q.comments.is_some_and(|c| c.authors);
    // Every column is named (`expr AS name`): rows are read by name (see `FeedRow`'s decoder).
    let null = |pg_type: &str, name: &str| {
        if sqlite {
            format!("NULL AS {name}")
        } else {
            format!("NULL::{pg_type} AS {name}")
        }
    };
    // An author's `name, role, created_at` from the join named `alias`, or as much of it as asked for.
    let user_columns = |alias: &str, selected: bool| match (selected, q.author_details) {
        (true, true) => format!(
            "{alias}.name AS {alias}_name, {alias}.role AS {alias}_role, \
             {alias}.created_at AS {alias}_created_at"
        ),
        (true, false) => format!(
            "{alias}.name AS {alias}_name, {}, {}",
            null("text", &format!("{alias}_role")),
            null("timestamptz", &format!("{alias}_created_at"))
        ),
        (false, _) => [
            null("text", &format!("{alias}_name")),
            null("text", &format!("{alias}_role")),
            null("timestamptz", &format!("{alias}_created_at")),
        ]
        .join(", "),
    };
    let mut sql = String::with_capacity(1024);
    if sqlite {
        sql.push_str(&format!("WITH p AS MATERIALIZED ({numbered}) "));
    }
    sql.push_str("SELECT p.id AS id, p.author_id AS author_id, p.title AS title, ");
    sql.push_str(&if q.content {
        "p.content AS content".to_owned()
    } else {
        null("text", "content")
    });
    sql.push_str(", ");
    sql.push_str(&if q.post_details {
        "p.published AS published, p.published_at AS published_at, p.created_at AS created_at, \
         p.updated_at AS updated_at"
            .to_owned()
    } else {
        [
            null("boolean", "published"),
            null("timestamptz", "published_at"),
            null("timestamptz", "created_at"),
            null("timestamptz", "updated_at"),
        ]
        .join(", ")
    });
    sql.push_str(", ");
    sql.push_str(&user_columns("pu", q.authors));
    sql.push_str(", ");
    sql.push_str(&match (q.counts, sqlite) {
        (false, _) => null("bigint", "comment_count"),
        (true, false) => "n.total AS comment_count".to_owned(),
        (true, true) => {
            format!("CASE WHEN p.n <= {shown} THEN COALESCE(n.total, 0) END AS comment_count")
        }
    });
    sql.push_str(", ");
    sql.push_str(&match q.comments {
        Some(c) => format!(
            "c.id AS c_id, c.author_id AS c_author_id, c.body AS c_body, {}",
            if c.dates {
                "c.created_at AS c_created_at".to_owned()
            } else {
                null("timestamptz", "c_created_at")
            }
        ),
        None => [
            null("bigint", "c_id"),
            null("bigint", "c_author_id"),
            null("text", "c_body"),
            null("timestamptz", "c_created_at"),
        ]
        .join(", "),
    });
    sql.push_str(", ");
    sql.push_str(&user_columns("cu", comment_authors));
    if sqlite {
        sql.push_str(" FROM p");
        if q.authors {
            sql.push_str(" JOIN users pu ON pu.id = p.author_id");
        }
        if q.counts {
            sql.push_str(
                " LEFT JOIN (SELECT post_id, COUNT(*) AS total FROM comments \
                 WHERE post_id IN (SELECT id FROM p) GROUP BY post_id) n ON n.post_id = p.id",
            );
        }
        if q.comments.is_some() {
            // The comments after the cursor, numbered per post in a window over the page's posts only.
            sql.push_str(&format!(
                " LEFT JOIN (SELECT id, post_id, author_id, body, created_at, \
                 ROW_NUMBER() OVER (PARTITION BY post_id ORDER BY id) AS rn FROM comments \
                 WHERE post_id IN (SELECT id FROM p WHERE n <= {shown}){comment_cursor}) c \
                 ON c.post_id = p.id AND c.rn <= {comment_limit}"
            ));
        }
        if comment_authors {
            sql.push_str(" LEFT JOIN users cu ON cu.id = c.author_id");
        }
    } else {
        // Every part a lookup that reads only the rows it returns; a condition on `p.n` alone is checked once
        // per post, before anything is read.
        sql.push_str(&format!(" FROM ({numbered}) p"));
        if q.authors {
            sql.push_str(
                " CROSS JOIN LATERAL (SELECT name, role, created_at FROM users \
                 WHERE users.id = p.author_id) pu",
            );
        }
        if q.counts {
            sql.push_str(&format!(
                " LEFT JOIN LATERAL (SELECT COUNT(*) AS total FROM comments \
                 WHERE post_id = p.id AND p.n <= {shown}) n ON true"
            ));
        }
        if q.comments.is_some() {
            sql.push_str(&format!(
                " LEFT JOIN LATERAL (SELECT id, author_id, body, created_at FROM comments \
                 WHERE post_id = p.id AND p.n <= {shown}{comment_cursor} \
                 ORDER BY id LIMIT {comment_limit}) c ON true"
            ));
        }
        if comment_authors {
            sql.push_str(
                " LEFT JOIN LATERAL (SELECT name, role, created_at FROM users \
                 WHERE users.id = c.author_id) cu ON true",
            );
        }
    }
    // Only the posts are ordered here: a post's comments come in whatever order the join produced them, and
    // `Store::feed` sorts them (a handful per post) rather than have the database sort every row again.
    sql.push_str(" ORDER BY p.id DESC");
    (sql, binds)
}

impl Store {
    /// A page of the published feed with what `q` asks for, in one statement (see the module header).
    pub async fn feed(&self, q: &FeedQuery) -> Result<Vec<FeedRow>, AppError> {
        self.count(1);
        let (sql, binds) = statement(matches!(self.db, Db::Sqlite(_)), q);
        let rows: Result<Vec<FeedRow>, AppError> = with_pool!(self, pool => {
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for v in binds {
                query = query.bind(v);
            }
            query.fetch_all(pool).await
        });
        let mut rows = rows?;
        // Each post's rows are together (the statement orders by post); put its comments oldest first.
        rows.sort_by_key(|r: &FeedRow| {
            (
                std::cmp::Reverse(r.post.id),
                r.comment.as_ref().map(|c| c.id),
            )
        });
        Ok(rows)
    }
}
