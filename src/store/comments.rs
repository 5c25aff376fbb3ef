//! Comments: rows, per-post pages for the loaders, and per-post counts.

use chrono::{DateTime, Utc};

use super::{IdListSql, Page, Store, id_list_sql, with_pool};
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
        self.fetch_for_ids(&SQL, ids, &[]).await
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
        self.fetch_for_ids(&SQL, ids, &[]).await
    }

    /// The same page of comments (oldest first) for each of several posts: one windowed statement whatever the
    /// number of posts, served by the `(post_id, id)` index.
    pub async fn comments_by_posts(
        &self,
        post_ids: &[i64],
        page: Page,
    ) -> Result<Vec<CommentRow>, AppError> {
        const SQL: IdListSql = id_list_sql!(
            concat!(
                "SELECT ",
                comment_cols!(),
                " FROM (SELECT ",
                comment_cols!(),
                ", ROW_NUMBER() OVER (PARTITION BY post_id ORDER BY id) AS rn",
                " FROM comments WHERE id > $2 AND post_id"
            ),
            ") ranked WHERE rn <= $3 ORDER BY post_id, id"
        );
        self.fetch_for_ids(&SQL, post_ids, &[page.after.unwrap_or(0), page.limit])
            .await
    }

    /// `(post_id, number of comments)` for several posts; posts with none are absent. One statement.
    pub async fn comment_counts(&self, post_ids: &[i64]) -> Result<Vec<(i64, i64)>, AppError> {
        const SQL: IdListSql = id_list_sql!(
            "SELECT post_id, COUNT(*) FROM comments WHERE post_id",
            " GROUP BY post_id"
        );
        self.fetch_for_ids(&SQL, post_ids, &[]).await
    }
}

/// A comment to add, already validated.
#[derive(Clone, Debug)]
pub struct CreateComment {
    pub post_id: i64,
    pub author_id: i64,
    pub body: String,
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
            .bind(&comment.body)
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
