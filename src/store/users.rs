//! Users: rows, batch lookups for the loaders, and the users list.

use chrono::{DateTime, Utc};

use super::{Page, Store, id_list_sql, with_pool};
use crate::error::AppError;

/// What a user may do. Stored as text (`USER` / `ADMIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

/// The billing plan. Stored as text (`FREE` / `PRO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Free,
    Pro,
}

/// A stored enum value that is not one this build knows: the database and the code disagree.
#[derive(Debug, thiserror::Error)]
#[error("unknown stored value `{0}`")]
pub struct UnknownValue(String);

impl TryFrom<String> for Role {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "USER" => Ok(Self::User),
            "ADMIN" => Ok(Self::Admin),
            _ => Err(UnknownValue(s)),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "USER",
            Self::Admin => "ADMIN",
        }
    }
}

impl TryFrom<String> for Plan {
    type Error = UnknownValue;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "FREE" => Ok(Self::Free),
            "PRO" => Ok(Self::Pro),
            _ => Err(UnknownValue(s)),
        }
    }
}

impl Plan {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Free => "FREE",
            Self::Pro => "PRO",
        }
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[sqlx(try_from = "String")]
    pub plan: Plan,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! user_cols {
    () => {
        "id, email, name, role, plan, created_at, updated_at"
    };
}

impl Store {
    /// Users by id, in no particular order; missing ids are simply absent. One statement.
    pub async fn users_by_ids(&self, ids: &[i64]) -> Result<Vec<UserRow>, AppError> {
        const SQL: super::IdListSql =
            id_list_sql!(concat!("SELECT ", user_cols!(), " FROM users WHERE id"), "");
        self.fetch_for_ids(&SQL, ids, &[]).await
    }

    /// One page of all users by id ascending.
    pub async fn list_users(&self, page: Page) -> Result<Vec<UserRow>, AppError> {
        self.count(1);
        const SQL: &str = concat!(
            "SELECT ",
            user_cols!(),
            " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
        );
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(page.after.unwrap_or(0))
            .bind(page.limit)
            .fetch_all(pool)
            .await)
    }

    /// How many users exist.
    pub async fn count_users(&self) -> Result<i64, AppError> {
        self.count(1);
        with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await)
    }
}
