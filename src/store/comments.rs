//! Comments: rows, per-post pages for the loaders, and per-post counts.

use chrono::{DateTime, Utc};

use super::users::{joined_user_cols, read_author};
use super::{IdListSql, Page, Store, UserRow, from_columns, id_list_sql, with_pool};
use crate::domain::CommentBody;
use crate::error::AppError;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CommentRow {
    pub id: i64,
    pub post_id: i64,
    pub author_id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// A comment with what decides whether a viewer may see it: its post's state. A comment is only as visible as
/// its post (a draft's comments are hidden with the draft), so every lookup of comments by id carries this.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct CommentOnPost {
    #[sqlx(flatten)]
    pub comment: CommentRow,
    pub post_published: bool,
    pub post_author_id: i64,
}

/// One comment of a page fetched for several posts at once, with its post's comment count.
#[derive(Clone, Debug, sqlx::FromRow)]
struct CommentInPage {
    #[sqlx(flatten)]
    comment: CommentRow,
    total: i64,
}

/// `CommentInPage` with the comment's author joined in: `comment_cols!()`, `total`, `joined_user_cols!()`.
#[derive(Clone)]
struct CommentInPageWithAuthor {
    comment: CommentRow,
    total: i64,
    author: UserRow,
}

from_columns!(CommentInPageWithAuthor, |cols| {
    let comment = CommentRow {
        id: cols.next("id")?,
        post_id: cols.next("post_id")?,
        author_id: cols.next("author_id")?,
        body: cols.next("body")?,
        created_at: cols.next("created_at")?,
    };
    let total = cols.next("total")?;
    let author = read_author(&mut cols, comment.author_id)?;
    Ok(CommentInPageWithAuthor {
        comment,
        total,
        author,
    })
});

/// What `comment_pages` returns for each comment: the comment, how many comments its post has, and its author
/// when asked for.
pub type CommentInPageRow = (CommentRow, i64, Option<UserRow>);

macro_rules! comment_cols {
    () => {
        "id, post_id, author_id, body, created_at"
    };
}

impl Store {
    /// Comments by id. One statement.
    pub async fn comments_by_ids(&self, ids: &[i64]) -> Result<Vec<CommentRow>, AppError> {
        const SQL: IdListSql = id_list_sql!(
            concat!("SELECT ", comment_cols!(), " FROM comments WHERE id"),
            ""
        );
        self.fetch_for_ids(&SQL, ids, &[], |c: &CommentRow| c.id)
            .await
    }

    /// Comments by id, each with its post's state (see `CommentOnPost`). One statement.
    pub async fn comments_on_posts_by_ids(
        &self,
        ids: &[i64],
    ) -> Result<Vec<CommentOnPost>, AppError> {
        const SQL: IdListSql = id_list_sql!(
            concat!(
                "SELECT c.id, c.post_id, c.author_id, c.body, c.created_at, ",
                "p.published AS post_published, p.author_id AS post_author_id ",
                "FROM comments c JOIN posts p ON p.id = c.post_id WHERE c.id"
            ),
            ""
        );
        self.fetch_for_ids(&SQL, ids, &[], |c: &CommentOnPost| c.comment.id)
            .await
    }

    /// The same page of comments (oldest first) for each of several posts: one statement whatever the number
    /// of posts (`comment_pages` without the counts' use or the authors).
    pub async fn comments_by_posts(
        &self,
        post_ids: &[i64],
        page: Page,
    ) -> Result<Vec<CommentRow>, AppError> {
        let rows = self.comment_pages(post_ids, page, false).await?;
        Ok(rows.into_iter().map(|(comment, _, _)| comment).collect())
    }

    /// A page of comments for each of several posts with, per comment, its post's comment count (all of its
    /// comments, whatever the cursor) and (with `authors`) the comment's author: everything a page of posts
    /// needs about its comments, in one statement.
    ///
    /// On PostgreSQL each post's page is an index range scan that stops after `page.limit` rows, its count an
    /// index-only scan, and each comment's author a primary-key lookup: it reads only the rows it returns. As a
    /// window over all of the posts' comments, and with the users joined plainly (the planner then hashed the
    /// whole users table), the same answer cost the database about a fifth more. SQLite, which has no
    /// `LATERAL`, numbers the comments after the cursor in a window.
    pub async fn comment_pages(
        &self,
        post_ids: &[i64],
        page: Page,
        authors: bool,
    ) -> Result<Vec<CommentInPageRow>, AppError> {
        // The page size and the cursor are written into the text (integers, not input), as in `post_page`:
        // each page shape is planned once per connection rather than on every execution.
        let after = page.after.unwrap_or(0);
        let limit = page.limit;
        let (postgres, sqlite) = if authors {
            (
                format!(
                    concat!(
                        "SELECT c.id, c.post_id, c.author_id, c.body, c.created_at, n.total, ",
                        joined_user_cols!(),
                        " FROM unnest($1::bigint[]) AS p(id)",
                        " CROSS JOIN LATERAL (SELECT COUNT(*) AS total FROM comments WHERE post_id = p.id) n",
                        " CROSS JOIN LATERAL (SELECT ",
                        comment_cols!(),
                        " FROM comments WHERE post_id = p.id AND id > {after} ORDER BY id LIMIT {limit}) c",
                        " CROSS JOIN LATERAL (SELECT * FROM users WHERE users.id = c.author_id LIMIT 1) u",
                        " ORDER BY c.post_id, c.id"
                    ),
                    after = after,
                    limit = limit
                ),
                format!(
                    concat!(
                        "SELECT c.id, c.post_id, c.author_id, c.body, c.created_at, c.total, ",
                        joined_user_cols!(),
                        " FROM (SELECT ",
                        comment_cols!(),
                        ", SUM(id > {after}) OVER (PARTITION BY post_id ORDER BY id ROWS UNBOUNDED PRECEDING) AS rn",
                        ", COUNT(*) OVER (PARTITION BY post_id) AS total",
                        " FROM comments WHERE post_id IN (SELECT value FROM json_each($1))) c",
                        " JOIN users u ON u.id = c.author_id WHERE c.id > {after} AND c.rn <= {limit}",
                        " ORDER BY c.post_id, c.id"
                    ),
                    after = after,
                    limit = limit
                ),
            )
        } else {
            (
                format!(
                    concat!(
                        "SELECT c.id, c.post_id, c.author_id, c.body, c.created_at, n.total",
                        " FROM unnest($1::bigint[]) AS p(id)",
                        " CROSS JOIN LATERAL (SELECT COUNT(*) AS total FROM comments WHERE post_id = p.id) n",
                        " CROSS JOIN LATERAL (SELECT ",
                        comment_cols!(),
                        " FROM comments WHERE post_id = p.id AND id > {after} ORDER BY id LIMIT {limit}) c",
                        " ORDER BY c.post_id, c.id"
                    ),
                    after = after,
                    limit = limit
                ),
                format!(
                    concat!(
                        "SELECT c.id, c.post_id, c.author_id, c.body, c.created_at, c.total",
                        " FROM (SELECT ",
                        comment_cols!(),
                        ", SUM(id > {after}) OVER (PARTITION BY post_id ORDER BY id ROWS UNBOUNDED PRECEDING) AS rn",
                        ", COUNT(*) OVER (PARTITION BY post_id) AS total",
                        " FROM comments WHERE post_id IN (SELECT value FROM json_each($1))) c",
                        " WHERE c.id > {after} AND c.rn <= {limit} ORDER BY c.post_id, c.id"
                    ),
                    after = after,
                    limit = limit
                ),
            )
        };
        if authors {
            let rows: Vec<CommentInPageWithAuthor> = self
                .fetch_for_ids_in(
                    &postgres,
                    &sqlite,
                    post_ids,
                    &[],
                    |r: &CommentInPageWithAuthor| r.comment.post_id,
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.comment, r.total, Some(r.author)))
                .collect())
        } else {
            let rows: Vec<CommentInPage> = self
                .fetch_for_ids_in(&postgres, &sqlite, post_ids, &[], |r: &CommentInPage| {
                    r.comment.post_id
                })
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.comment, r.total, None))
                .collect())
        }
    }

    /// `(post_id, number of comments)` for several posts; posts with none are absent. One statement.
    pub async fn comment_counts(&self, post_ids: &[i64]) -> Result<Vec<(i64, i64)>, AppError> {
        const SQL: IdListSql = id_list_sql!(
            "SELECT post_id, COUNT(*) FROM comments WHERE post_id",
            " GROUP BY post_id"
        );
        self.fetch_for_ids(&SQL, post_ids, &[], |r: &(i64, i64)| r.0)
            .await
    }
}

/// A comment to add, already validated.
#[derive(Clone, Debug)]
pub struct CreateComment {
    pub post_id: i64,
    pub author_id: i64,
    pub body: CommentBody,
}

impl Store {
    /// Adds a comment if the post exists and is published, checked in the same statement as the insert so a
    /// post unpublished a moment earlier cannot receive it. `None` when the post is missing or a draft.
    pub async fn add_comment(
        &self,
        comment: &CreateComment,
    ) -> Result<Option<CommentRow>, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "INSERT INTO comments (post_id, author_id, body, created_at) ",
            "SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM posts WHERE id = $1 AND published = TRUE) ",
            "RETURNING ",
            comment_cols!()
        );
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(comment.post_id)
            .bind(comment.author_id)
            .bind(comment.body.as_str())
            .bind(Utc::now())
            .fetch_optional(pool)
            .await)
    }

    /// Deletes a comment; `false` when it was already gone.
    pub async fn delete_comment(&self, id: i64) -> Result<bool, AppError> {
        self.count(1);
        let done = with_pool!(self, pool => sqlx::query("DELETE FROM comments WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }
}
