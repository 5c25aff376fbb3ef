//! User queries: `me`, `user`, `users`.

use async_graphql::{Context, ID, Object};

use crate::cache::Tag;
use crate::graphql::connection::{self, Conn, CountOf};
use crate::graphql::context::ContextExt;
use crate::graphql::cost;
use crate::graphql::guards::AdminOnly;
use crate::graphql::ids;
use crate::graphql::loaders::UserId;

use super::User;

#[derive(Default)]
pub struct UserQuery;

#[Object]
impl UserQuery {
    /// The signed-in user; `null` when the request carries no credentials.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let Some(id) = ctx.viewer().user_id() else {
            return Ok(None);
        };
        ctx.tag(Tag::User(id));
        let row = ctx.loaders()?.load_one(UserId(id)).await?;
        Ok(row.map(User::new))
    }

    /// A user by id; `null` when there is none.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<User>> {
        let id = ids::parse(&id, "id")?;
        ctx.tag(Tag::User(id));
        let row = ctx.loaders()?.load_one(UserId(id)).await?;
        Ok(row.map(User::new))
    }

    /// Every user, by id. Admins only.
    #[graphql(
        guard = "AdminOnly",
        complexity = "connection::complexity(first, child_complexity)",
        directive = cost::list_size::apply(None, cost::by_first(), cost::edges_and_nodes())
    )]
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> async_graphql::Result<Conn<User>> {
        let page = connection::page_args(first, after.as_deref())?;
        let rows = ctx.store()?.list_users(page).await?;
        ctx.tag(Tag::UserList);
        for row in &rows {
            ctx.tag(Tag::User(row.id));
        }
        Ok(connection::build(
            rows,
            page,
            CountOf::Users,
            |r| r.id,
            User::new,
        ))
    }
}
