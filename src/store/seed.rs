//! Bulk inserts for `folio seed` and the demo data: one statement per batch (arrays on PostgreSQL, a JSON
//! array on SQLite), each batch its own transaction, so seeding a million rows takes seconds, not hours.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::{Db, Store};
use crate::error::AppError;

pub struct NewUser {
    pub email: String,
    pub name: String,
    pub role: &'static str,
    pub plan: &'static str,
    pub created_at: DateTime<Utc>,
}

pub struct NewPost {
    pub author_id: i64,
    pub title: String,
    pub content: String,
    pub published: bool,
    pub created_at: DateTime<Utc>,
}

pub struct NewComment {
    pub post_id: i64,
    pub author_id: i64,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// The text form sqlx itself writes for `DateTime<Utc>` on SQLite, so seeded and API-written rows agree.
fn sqlite_ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

impl Store {
    /// Inserts users; returns their new ids.
    pub async fn insert_users(&self, rows: &[NewUser]) -> Result<Vec<i64>, AppError> {
        self.count(1);
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query_scalar(
                    "INSERT INTO users (email, name, role, plan, created_at, updated_at) \
                     SELECT e, n, r, p, c, c FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) \
                     AS t(e, n, r, p, c) RETURNING id",
                )
                .bind(rows.iter().map(|r| r.email.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.name.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.role).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.plan).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
                .fetch_all(pool)
                .await
            }
            Db::Sqlite(pool) => {
                let data: Vec<_> = rows
                    .iter()
                    .map(|r| json!([r.email, r.name, r.role, r.plan, sqlite_ts(&r.created_at)]))
                    .collect();
                sqlx::query_scalar(
                    "INSERT INTO users (email, name, role, plan, created_at, updated_at) \
                     SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>4 \
                     FROM json_each($1) RETURNING id",
                )
                .bind(serde_json::Value::Array(data).to_string())
                .fetch_all(pool)
                .await
            }
        }
        .map_err(AppError::from)
    }

    /// Inserts posts; returns `(id, published)` for each, in input order.
    pub async fn insert_posts(&self, rows: &[NewPost]) -> Result<Vec<(i64, bool)>, AppError> {
        self.count(1);
        match &self.db {
            Db::Postgres(pool) => sqlx::query_as(
                "INSERT INTO posts (author_id, title, content, published, published_at, created_at, updated_at) \
                     SELECT a, t, c, p, CASE WHEN p THEN ts END, ts, ts \
                     FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::boolean[], $5::timestamptz[]) \
                     AS x(a, t, c, p, ts) RETURNING id, published",
            )
            .bind(rows.iter().map(|r| r.author_id).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.title.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.content.as_str()).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.published).collect::<Vec<_>>())
            .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
            .fetch_all(pool)
            .await
            .map(sorted),
            Db::Sqlite(pool) => {
                let data: Vec<_> = rows
                    .iter()
                    .map(|r| json!([r.author_id, r.title, r.content, r.published, sqlite_ts(&r.created_at)]))
                    .collect();
                sqlx::query_as(
                    "INSERT INTO posts (author_id, title, content, published, published_at, created_at, updated_at) \
                     SELECT value->>0, value->>1, value->>2, value->>3, \
                            CASE WHEN value->>3 THEN value->>4 END, value->>4, value->>4 \
                     FROM json_each($1) RETURNING id, published",
                )
                .bind(serde_json::Value::Array(data).to_string())
                .fetch_all(pool)
                .await
                .map(sorted)
            }
        }
        .map_err(AppError::from)
    }

    /// Inserts comments.
    pub async fn insert_comments(&self, rows: &[NewComment]) -> Result<(), AppError> {
        self.count(1);
        match &self.db {
            Db::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO comments (post_id, author_id, body, created_at) \
                     SELECT * FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[])",
                )
                .bind(rows.iter().map(|r| r.post_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.author_id).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.body.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.created_at).collect::<Vec<_>>())
                .execute(pool)
                .await?;
            }
            Db::Sqlite(pool) => {
                let data: Vec<_> = rows
                    .iter()
                    .map(|r| json!([r.post_id, r.author_id, r.body, sqlite_ts(&r.created_at)]))
                    .collect();
                sqlx::query(
                    "INSERT INTO comments (post_id, author_id, body, created_at) \
                     SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each($1)",
                )
                .bind(serde_json::Value::Array(data).to_string())
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Refreshes the planner's statistics after a bulk load, so the first queries get good plans. On PostgreSQL
    /// also VACUUM, which sets the visibility map: until it is set (autovacuum gets there eventually), counting
    /// a post's comments reads one heap page per comment instead of the index alone.
    pub async fn analyze(&self) -> Result<(), AppError> {
        self.count(1);
        match &self.db {
            Db::Postgres(pool) => sqlx::query("VACUUM (ANALYZE) users, posts, comments")
                .execute(pool)
                .await
                .map(|_| ())?,
            Db::Sqlite(pool) => sqlx::query("ANALYZE").execute(pool).await.map(|_| ())?,
        };
        Ok(())
    }
}

/// `RETURNING` makes no promise about order; ids are assigned in input order, so sorting restores it.
fn sorted(mut rows: Vec<(i64, bool)>) -> Vec<(i64, bool)> {
    rows.sort_unstable_by_key(|(id, _)| *id);
    rows
}
