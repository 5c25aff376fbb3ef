//! Account mutations: `signUp`, `login`, `updateProfile`, `setUserRole`.

use async_graphql::{Context, ID, Object, SimpleObject};

use super::inputs::{Credentials, LoginInput, SignUp, SignUpInput, UpdateProfileInput};
use super::{Role, User};
use crate::auth::password;
use crate::cache::tags;
use crate::domain::DisplayName;
use crate::error::AppError;
use crate::graphql::LoginLimits;
use crate::graphql::context::{ClientAddr, ContextExt};
use crate::graphql::guards::{AdminOnly, LoggedIn};
use crate::graphql::ids;
use crate::ratelimit::Decision;
use crate::store::CreateAccount;

/// A signed-in session: a bearer token for the `Authorization` header, and who it is for.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// Send as `Authorization: Bearer <token>`. Expires after `FOLIO_TOKEN_TTL_SECS` (1 hour by default).
    pub token: String,
    pub user: User,
}

#[derive(Default)]
pub struct UserMutation;

/// Counts a login attempt against the email's and the client address's buckets, so passwords cannot be
/// brute-forced one account at a time or many accounts from one place. Checked before the password, so an
/// attacker learns nothing from a throttled attempt.
async fn throttle_login(ctx: &Context<'_>, email: &str) -> Result<(), AppError> {
    let Ok(limits) = ctx.data::<LoginLimits>() else {
        return Ok(());
    };
    let mut keys = vec![(format!("login:email:{email}"), limits.per_email)];
    if let Ok(ClientAddr(addr)) = ctx.data::<ClientAddr>() {
        keys.push((format!("login:ip:{addr}"), limits.per_address));
    }
    for (key, rate) in keys {
        if let Decision::Limited(wait) = limits.limiter.check(&key, rate).await {
            return Err(AppError::RateLimited {
                retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
            });
        }
    }
    Ok(())
}

#[Object]
impl UserMutation {
    /// Creates an account and signs it in. A taken email → `CONFLICT` with `fieldErrors.email`.
    #[graphql(directive = crate::graphql::cost::cost::apply(crate::graphql::cost::PASSWORD_WEIGHT))]
    async fn sign_up(
        &self,
        ctx: &Context<'_>,
        input: SignUpInput,
    ) -> async_graphql::Result<AuthPayload> {
        let input = SignUp::try_from(input)?;
        let password_hash = password::hash(input.password.into_inner()).await?;
        let user = ctx
            .store()?
            .create_account(&CreateAccount {
                email: input.email,
                name: input.name,
                password_hash,
            })
            .await?;
        // `User:<id>` too: a `user(id)` that answered `null` for this id before it existed may be cached.
        ctx.purge_after_commit(vec![tags::USER_LIST.to_owned(), tags::user(user.id)]);
        let token = ctx.auth()?.tokens().issue(user.id, user.role)?;
        Ok(AuthPayload {
            token,
            user: User::to_self(user),
        })
    }

    /// Signs in with email and password. An unknown email and a wrong password get the same answer.
    #[graphql(directive = crate::graphql::cost::cost::apply(crate::graphql::cost::PASSWORD_WEIGHT))]
    async fn login(
        &self,
        ctx: &Context<'_>,
        input: LoginInput,
    ) -> async_graphql::Result<AuthPayload> {
        let input = Credentials::try_from(input)?;
        throttle_login(ctx, &input.email).await?;
        let found = ctx.store()?.user_by_email(&input.email).await?;
        let (user, hash) = match found {
            Some((user, hash)) => (Some(user), hash),
            None => (None, None),
        };
        let matches = password::verify(input.password, hash).await?;
        let user = match user {
            Some(user) if matches => user,
            _ => {
                return Err(AppError::Unauthenticated("Invalid email or password.".into()).into());
            }
        };
        let token = ctx.auth()?.tokens().issue(user.id, user.role)?;
        Ok(AuthPayload {
            token,
            user: User::to_self(user),
        })
    }

    /// Changes the signed-in user's name.
    #[graphql(guard = "LoggedIn")]
    async fn update_profile(
        &self,
        ctx: &Context<'_>,
        input: UpdateProfileInput,
    ) -> async_graphql::Result<User> {
        let id = ctx.viewer().require_user()?;
        let name = DisplayName::try_from(input)?;
        let row = ctx
            .store()?
            .update_user_name(id, &name)
            .await?
            .ok_or_else(|| AppError::NotFound("Your account no longer exists.".into()))?;
        ctx.purge_after_commit(vec![tags::user(id)]);
        Ok(User::new(row))
    }

    /// Makes a user an admin or a regular user. Admins only; the last admin cannot be demoted (`CONFLICT`).
    #[graphql(guard = "AdminOnly")]
    async fn set_user_role(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        role: Role,
    ) -> async_graphql::Result<User> {
        let id = ids::parse(&user_id, "userId")?;
        let row = ctx.store()?.set_user_role(id, role.into()).await?;
        ctx.purge_after_commit(vec![tags::user(id)]);
        Ok(User::new(row))
    }
}
