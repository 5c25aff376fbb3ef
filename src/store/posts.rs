//! Posts: rows, the filtered feed, per-author pages for the loaders, and counts.

use chrono::{DateTime, Utc};
use sqlx::AssertSqlSafe;

use super::share::Statement;
use super::users::{joined_user_cols, read_author};
use super::{
    Db, DecodeOnBoth, IdListSql, Page, Store, UserRow, from_columns, id_list_sql, like_pattern,
    with_pool,
};
use crate::domain::{PostContent, Title};
use crate::error::AppError;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PostRow {
    pub id: i64,
    pub author_id: i64,
    pub title: String,
    pub content: String,
    pub published: bool,
    pub published_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A post with its author's columns, from one statement: `post_cols!()` then `joined_user_cols!()`.
#[derive(Clone)]
struct PostWithAuthor {
    post: PostRow,
    author: UserRow,
}

from_columns!(PostWithAuthor, |cols| {
    let post = PostRow {
        id: cols.next("id")?,
        author_id: cols.next("author_id")?,
        title: cols.next("title")?,
        content: cols.next("content")?,
        published: cols.next("published")?,
        published_at: cols.next("published_at")?,
        created_at: cols.next("created_at")?,
        updated_at: cols.next("updated_at")?,
    };
    let author = read_author(&mut cols, post.author_id)?;
    Ok(PostWithAuthor { post, author })
});

macro_rules! post_cols {
    () => {
        "id, author_id, title, content, published, published_at, created_at, updated_at"
    };
}

/// Whether a page of posts reads each post's `content` (about 700 bytes each), or leaves it empty because the
/// response does not show it (a planned read that knows its selection; see `graphql/compiled`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    Read,
    Skip,
}

impl Content {
    /// The post columns to select, `post_cols!()` order.
    fn columns(self) -> &'static str {
        match self {
            Content::Read => post_cols!(),
            Content::Skip => {
                "id, author_id, title, '' AS content, published, published_at, created_at, updated_at"
            }
        }
    }
}

/// Which posts a list shows. Built by the GraphQL layer after it has decided what the viewer may see.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PostListFilter {
    /// Only this author's posts.
    pub author_id: Option<i64>,
    /// Case-insensitive substring of the title or the content.
    pub search: Option<String>,
    /// Which unpublished posts to list too (the caller has decided what the viewer may see).
    pub drafts: Drafts,
}

/// Drafts in a post list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Drafts {
    /// Published posts only.
    #[default]
    Exclude,
    /// Every draft (admins).
    All,
    /// Drafts by this author only (a user looking at a list that may hold their own drafts).
    OfAuthor(i64),
}

/// A value bound to a dynamically assembled statement.
#[derive(Clone, Debug)]
enum Arg {
    Int(i64),
    Text(String),
}

/// Assembles `WHERE ...` for a post list from fixed fragments; every user-supplied value is a bind parameter,
/// never part of the text. Returns the clause and its arguments, numbered from `$1`.
fn post_where(filter: &PostListFilter, db: &Db) -> (String, Vec<Arg>) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args = Vec::new();
    match filter.drafts {
        Drafts::Exclude => clauses.push("published = TRUE".into()),
        Drafts::All => {}
        Drafts::OfAuthor(author) => {
            args.push(Arg::Int(author));
            clauses.push(format!("(published = TRUE OR author_id = ${})", args.len()));
        }
    }
    if let Some(author) = filter.author_id {
        args.push(Arg::Int(author));
        clauses.push(format!("author_id = ${}", args.len()));
    }
    if let Some(term) = filter.search.as_deref() {
        args.push(Arg::Text(like_pattern(term)));
        let n = args.len();
        clauses.push(match db {
            // pg_trgm indexes serve ILIKE '%term%' on both columns.
            Db::Postgres(_) => format!("(title ILIKE ${n} OR content ILIKE ${n})"),
            // SQLite's LIKE folds ASCII case only; non-ASCII letters match case-sensitively.
            Db::Sqlite(_) => {
                format!("(title LIKE ${n} ESCAPE '\\' OR content LIKE ${n} ESCAPE '\\')")
            }
        });
    }
    let clause = if clauses.is_empty() {
        "TRUE".to_owned()
    } else {
        clauses.join(" AND ")
    };
    (clause, args)
}

macro_rules! bind_args {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for arg in $args {
            q = match arg {
                Arg::Int(v) => q.bind(v),
                Arg::Text(v) => q.bind(v),
            };
        }
        q
    }};
}

impl Store {
    /// Posts by id (drafts included: visibility is the caller's decision). One statement.
    pub async fn posts_by_ids(&self, ids: &[i64]) -> Result<Vec<PostRow>, AppError> {
        const SQL: IdListSql =
            id_list_sql!(concat!("SELECT ", post_cols!(), " FROM posts WHERE id"), "");
        self.fetch_for_ids(&SQL, ids, &[], |p: &PostRow| p.id).await
    }

    /// `posts_by_ids` with each post's author joined in (for a selection that reads the authors: one
    /// statement instead of two).
    pub async fn posts_by_ids_with_authors(
        &self,
        ids: &[i64],
    ) -> Result<Vec<(PostRow, UserRow)>, AppError> {
        const SQL: IdListSql = id_list_sql!(
            concat!(
                "SELECT p.id, p.author_id, p.title, p.content, p.published, p.published_at, p.created_at, ",
                "p.updated_at, ",
                joined_user_cols!(),
                " FROM posts p JOIN users u ON u.id = p.author_id WHERE p.id"
            ),
            ""
        );
        let rows: Vec<PostWithAuthor> = self
            .fetch_for_ids(&SQL, ids, &[], |r: &PostWithAuthor| r.post.id)
            .await?;
        Ok(rows.into_iter().map(|r| (r.post, r.author)).collect())
    }

    /// One page of a post list, newest first (keyset on id).
    pub async fn list_posts(
        &self,
        filter: &PostListFilter,
        page: Page,
        content: Content,
    ) -> Result<Vec<PostRow>, AppError> {
        self.post_page(filter, page, false, content).await
    }

    /// `list_posts` with each post's author, joined in the same statement (for a page whose selection reads
    /// the authors: one statement instead of two).
    pub async fn list_posts_with_authors(
        &self,
        filter: &PostListFilter,
        page: Page,
        content: Content,
    ) -> Result<Vec<(PostRow, UserRow)>, AppError> {
        let rows: Vec<PostWithAuthor> = self.post_page(filter, page, true, content).await?;
        Ok(rows.into_iter().map(|r| (r.post, r.author)).collect())
    }

    /// The statement behind `list_posts` (and, with `authors`, `list_posts_with_authors`): the page is taken
    /// first, then joined to the 21-odd authors it needs.
    ///
    /// The page size and the cursor are written into the text (integers computed here, not input), and the
    /// cursor condition is there only with a cursor: PostgreSQL plans a prepared statement afresh on every
    /// execution while its generic plan looks worse than the custom ones, which a `LIMIT $n` always does, so a
    /// parameter there cost a plan per request. Written in, each page size is planned once per connection.
    async fn post_page<T>(
        &self,
        filter: &PostListFilter,
        page: Page,
        authors: bool,
        content: Content,
    ) -> Result<Vec<T>, AppError>
    where
        T: DecodeOnBoth + Clone + Sync + 'static,
    {
        let (clause, args) = post_where(filter, &self.db);
        let after = match page.after {
            Some(after) => format!(" AND id < {after}"),
            None => String::new(),
        };
        // SQLite prefers walking the primary key down from the cursor and skipping drafts, which costs as
        // many rows as there are drafts newer than the page (2 ms with 50,000 of them, against 14 µs through
        // the feed's partial index). PostgreSQL picks the partial index by itself.
        let table = match &self.db {
            Db::Sqlite(_) if filter.drafts == Drafts::Exclude && filter.author_id.is_none() => {
                "posts INDEXED BY posts_published_feed"
            }
            _ => "posts",
        };
        // Only fixed fragments and integers are formatted into the text (see `post_where`).
        let mut sql = format!(
            "SELECT {} FROM {table} WHERE {clause}{after} ORDER BY id DESC LIMIT {}",
            content.columns(),
            page.limit
        );
        if authors {
            sql = format!(
                concat!(
                    "SELECT p.*, ",
                    joined_user_cols!(),
                    " FROM ({}) p JOIN users u ON u.id = p.author_id ORDER BY p.id DESC"
                ),
                sql
            );
        }
        // Shared by concurrent callers asking for the same page (text and values): each gets all of its rows.
        let statement = Statement::new::<T>(&format!("{sql}\n{args:?}"), &[]);
        self.sharing
            .rows(statement, &[], None, |_| async move {
                self.count(1);
                match &self.db {
                    Db::Postgres(pool) => {
                        bind_args!(sqlx::query_as(AssertSqlSafe(sql)), args)
                            .fetch_all(pool)
                            .await
                    }
                    Db::Sqlite(pool) => {
                        bind_args!(sqlx::query_as(AssertSqlSafe(sql)), args)
                            .fetch_all(pool)
                            .await
                    }
                }
                .map_err(AppError::from)
            })
            .await
    }

    /// How many posts a list holds in all (for `totalCount`).
    pub async fn count_posts(&self, filter: &PostListFilter) -> Result<i64, AppError> {
        let (clause, args) = post_where(filter, &self.db);
        let sql = format!("SELECT COUNT(*) FROM posts WHERE {clause}");
        self.count(1);
        match &self.db {
            Db::Postgres(pool) => {
                bind_args!(sqlx::query_scalar(AssertSqlSafe(sql)), args)
                    .fetch_one(pool)
                    .await
            }
            Db::Sqlite(pool) => {
                bind_args!(sqlx::query_scalar(AssertSqlSafe(sql)), args)
                    .fetch_one(pool)
                    .await
            }
        }
        .map_err(AppError::from)
    }

    /// The same page of posts for each of several authors, newest first: one windowed statement whatever the
    /// number of authors. `include_drafts` lists unpublished posts too.
    pub async fn posts_by_authors(
        &self,
        author_ids: &[i64],
        include_drafts: bool,
        page: Page,
        content: Content,
    ) -> Result<Vec<PostRow>, AppError> {
        // The cursor and the page size in the text, as in `post_page`.
        let published = if include_drafts {
            ""
        } else {
            "published = TRUE AND "
        };
        let after = match page.after {
            Some(after) => format!("id < {after} AND "),
            None => String::new(),
        };
        let sql = |ids: &str| {
            format!(
                concat!(
                    "SELECT ",
                    post_cols!(),
                    " FROM (SELECT {}",
                    ", ROW_NUMBER() OVER (PARTITION BY author_id ORDER BY id DESC) AS rn",
                    " FROM posts WHERE {}{}author_id{}) ranked WHERE rn <= {} ORDER BY author_id, id DESC"
                ),
                content.columns(),
                published,
                after,
                ids,
                page.limit
            )
        };
        self.fetch_for_ids_in(
            &sql(" = ANY($1)"),
            &sql(" IN (SELECT value FROM json_each($1))"),
            author_ids,
            &[],
            |p: &PostRow| p.author_id,
        )
        .await
    }

    /// `(author_id, number of posts)` for several authors; authors with none are absent. One statement.
    pub async fn post_counts_by_authors(
        &self,
        author_ids: &[i64],
        include_drafts: bool,
    ) -> Result<Vec<(i64, i64)>, AppError> {
        const PUBLISHED: IdListSql = id_list_sql!(
            "SELECT author_id, COUNT(*) FROM posts WHERE published = TRUE AND author_id",
            " GROUP BY author_id"
        );
        const ALL: IdListSql = id_list_sql!(
            "SELECT author_id, COUNT(*) FROM posts WHERE author_id",
            " GROUP BY author_id"
        );
        let sql = if include_drafts { &ALL } else { &PUBLISHED };
        self.fetch_for_ids(sql, author_ids, &[], |r: &(i64, i64)| r.0)
            .await
    }
}

/// A post to create, of validated values (see `domain`).
#[derive(Clone, Debug)]
pub struct NewPost {
    pub title: Title,
    pub content: PostContent,
    pub published: bool,
}

/// Validated changes to a post; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct PostChanges {
    pub title: Option<Title>,
    pub content: Option<PostContent>,
}

impl Store {
    /// Inserts a post and returns it as stored.
    pub async fn create_post(&self, author_id: i64, post: &NewPost) -> Result<PostRow, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "INSERT INTO posts (author_id, title, content, published, published_at, created_at, updated_at) ",
            "VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING ",
            post_cols!()
        );
        let now = Utc::now();
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(author_id)
            .bind(post.title.as_str())
            .bind(post.content.as_str())
            .bind(post.published)
            .bind(post.published.then_some(now))
            .bind(now)
            .fetch_one(pool)
            .await)
    }

    /// Applies `changes`; `None` when the post no longer exists.
    pub async fn update_post(
        &self,
        id: i64,
        changes: &PostChanges,
    ) -> Result<Option<PostRow>, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "UPDATE posts SET title = COALESCE($2, title), content = COALESCE($3, content), updated_at = $4 ",
            "WHERE id = $1 RETURNING ",
            post_cols!()
        );
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(id)
            .bind(changes.title.as_ref().map(Title::as_str))
            .bind(changes.content.as_ref().map(PostContent::as_str))
            .bind(Utc::now())
            .fetch_optional(pool)
            .await)
    }

    /// Publishes or unpublishes a post. Publishing stamps `published_at` (kept if it was already published);
    /// unpublishing clears it. Doing what is already done changes nothing. `None` when the post is gone.
    pub async fn set_published(
        &self,
        id: i64,
        published: bool,
    ) -> Result<Option<PostRow>, AppError> {
        self.count(1);
        const PUBLISH: &str = concat!(
            "UPDATE posts SET published = TRUE, published_at = COALESCE(published_at, $2), ",
            "updated_at = CASE WHEN published THEN updated_at ELSE $2 END WHERE id = $1 RETURNING ",
            post_cols!()
        );
        const UNPUBLISH: &str = concat!(
            "UPDATE posts SET published = FALSE, published_at = NULL, ",
            "updated_at = CASE WHEN published THEN $2 ELSE updated_at END WHERE id = $1 RETURNING ",
            post_cols!()
        );
        let sql = if published { PUBLISH } else { UNPUBLISH };
        with_pool!(self, pool => sqlx::query_as(sql)
            .bind(id)
            .bind(Utc::now())
            .fetch_optional(pool)
            .await)
    }

    /// Deletes a post and (by cascade) its comments; `false` when it was already gone.
    pub async fn delete_post(&self, id: i64) -> Result<bool, AppError> {
        self.count(1);
        let done = with_pool!(self, pool => sqlx::query("DELETE FROM posts WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(done > 0)
    }
}
