//! `User`, `Role` and `Plan` as clients see them.

use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use crate::graphql::connection::{self, Conn, CountOf};
use crate::graphql::context::ContextExt;
use crate::graphql::ids;
use crate::graphql::loaders::{AuthorPostCount, AuthorPosts};
use crate::graphql::posts::Post;
use crate::store::{self, UserRow};

/// What a user may do.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

impl From<store::Role> for Role {
    fn from(r: store::Role) -> Self {
        match r {
            store::Role::User => Self::User,
            store::Role::Admin => Self::Admin,
        }
    }
}

/// The billing plan.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    Free,
    Pro,
}

impl From<store::Plan> for Plan {
    fn from(p: store::Plan) -> Self {
        match p {
            store::Plan::Free => Self::Free,
            store::Plan::Pro => Self::Pro,
        }
    }
}

/// Someone with an account: an author, a commenter, or both.
pub struct User(pub UserRow);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ids::id(self.0.id)
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The sign-in address.
    async fn email(&self) -> Option<&str> {
        Some(&self.0.email)
    }

    async fn role(&self) -> Role {
        self.0.role.into()
    }

    /// The billing plan. Nullable because it is private to the user and admins.
    async fn plan(&self) -> Option<Plan> {
        Some(self.0.plan.into())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// This user's published posts, newest first.
    #[graphql(complexity = "connection::complexity(first, child_complexity)")]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Post>> {
        let page = connection::page_args(first, after.as_deref())?;
        let include_drafts = false;
        let key = AuthorPosts {
            author_id: self.0.id,
            include_drafts,
            page,
        };
        let rows = ctx.loaders()?.load_one(key).await?.unwrap_or_default();
        let count = CountOf::AuthorPosts(AuthorPostCount {
            author_id: self.0.id,
            include_drafts,
        });
        Ok(connection::build(rows, page, count, |r| r.id, Post))
    }
}
