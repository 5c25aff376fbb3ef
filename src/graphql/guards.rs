//! Guards: who may call a field at all, checked before its resolver runs. Ownership ("your own post") needs the
//! object, so it is checked in the resolver, through `authorize` helpers next to each domain's mutations.

use async_graphql::{Context, Guard};

use crate::error::AppError;
use crate::graphql::context::ContextExt;

/// Signed in, any role. Anonymous callers get `UNAUTHENTICATED`.
pub struct LoggedIn;

impl Guard for LoggedIn {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        ctx.viewer().require_user()?;
        Ok(())
    }
}

/// Signed in as an admin. Anonymous callers get `UNAUTHENTICATED`, other users `FORBIDDEN`.
pub struct AdminOnly;

impl Guard for AdminOnly {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let viewer = ctx.viewer();
        viewer.require_user()?;
        if !viewer.is_admin() {
            return Err(AppError::Forbidden("Only admins may do this.".into()).into());
        }
        Ok(())
    }
}
