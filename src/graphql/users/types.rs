//! `User`, `Role` and `Plan` as clients see them.

use async_graphql::{Context, Enum, ID, Object};
use chrono::{DateTime, Utc};

use crate::auth::Viewer;
use crate::cache::Tag;
use crate::graphql::connection::{self, Conn, CountOf};
use crate::graphql::context::ContextExt;
use crate::graphql::cost;
use crate::graphql::ids;
use crate::graphql::loaders::{AuthorPostCount, AuthorPosts};
use crate::graphql::posts::Post;
use crate::store::{self, UserRow};

/// What a user may do.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
// Mirrors `store::Role`; `remote` derives both conversions, so a new variant fails to compile until added here.
#[graphql(remote = "store::Role")]
pub enum Role {
    User,
    Admin,
}

/// The billing plan.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[graphql(remote = "store::Plan")]
pub enum Plan {
    Free,
    Pro,
}

/// Someone with an account: an author, a commenter, or both.
pub struct User {
    pub row: UserRow,
    /// The response goes to this user even though the request was anonymous (`signUp`, `login`).
    to_self: bool,
}

impl User {
    pub fn new(row: UserRow) -> Self {
        Self {
            row,
            to_self: false,
        }
    }

    /// A user returned to themselves by a mutation that signed them in.
    pub fn to_self(row: UserRow) -> Self {
        Self { row, to_self: true }
    }

    /// Whether the viewer may see this user's private fields (email, plan, drafts).
    fn private_visible(&self, ctx: &Context<'_>) -> bool {
        self.to_self || may_see_private(ctx.viewer(), self.row.id)
    }
}

/// Whether `viewer` may see the private side of user `user_id` (email, plan, drafts): the user and admins. Every
/// path that answers these asks this.
pub fn may_see_private(viewer: &Viewer, user_id: i64) -> bool {
    viewer.owns_or_admin(user_id)
}

#[Object(cache_control(max_age = 60))]
impl User {
    async fn id(&self) -> ID {
        ids::id(self.row.id)
    }

    async fn name(&self) -> &str {
        &self.row.name
    }

    /// The sign-in address. Visible to the user and to admins; `null` for everyone else.
    async fn email(&self, ctx: &Context<'_>) -> Option<&str> {
        self.private_visible(ctx).then_some(self.row.email.as_str())
    }

    async fn role(&self) -> Role {
        self.row.role.into()
    }

    /// The billing plan. Visible to the user and to admins; `null` for everyone else.
    async fn plan(&self, ctx: &Context<'_>) -> Option<Plan> {
        self.private_visible(ctx).then(|| self.row.plan.into())
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }

    /// This user's posts, newest first: published ones, plus drafts when the viewer is this user or an admin.
    #[graphql(
        complexity = "connection::complexity(first, child_complexity)",
        directive = cost::list_size::apply(None, cost::by_first(), cost::edges_and_nodes())
    )]
    async fn posts(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<Post>> {
        let page = connection::page_args(first, after.as_deref())?;
        let include_drafts = self.private_visible(ctx);
        let key = AuthorPosts {
            author_id: self.row.id,
            include_drafts,
            page,
        };
        let rows = ctx.loaders()?.load_one(key).await?.unwrap_or_default();
        ctx.tag(Tag::UserPosts(self.row.id));
        for row in &rows {
            ctx.tag(Tag::Post(row.id));
        }
        let count = CountOf::AuthorPosts(AuthorPostCount {
            author_id: self.row.id,
            include_drafts,
        });
        Ok(connection::build(rows, page, count, |r| r.id, Post))
    }
}
