//! Account mutations: `signUp`, `login`, `updateProfile`, `linkIdentity`, `setUserRole`.

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
use crate::ratelimit::{Decision, Rate};
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

/// Login throttling, checked before the password so a throttled attempt teaches an attacker nothing:
/// - per client address, over every email (5× `FOLIO_LOGIN_ATTEMPTS_PER_15MIN`): many accounts from one place;
/// - per email and client address (`FOLIO_LOGIN_ATTEMPTS_PER_15MIN`): one account from one place;
/// - per email, over every address the account has *not* signed in from in the last 30 days (3× the setting an
///   hour, slower): one account guessed from many places.
///
/// So wrong passwords sent from elsewhere, however many addresses they come from, never stop the owner where she
/// has signed in before; from a new address during such an attack she waits for the slow bucket.
async fn throttle_login(ctx: &Context<'_>, email: &str) -> Result<(), AppError> {
    let Ok(limits) = ctx.data::<LoginLimits>() else {
        return Ok(());
    };
    let email = email.to_lowercase();
    let Ok(ClientAddr(addr)) = ctx.data::<ClientAddr>() else {
        return check(
            limits,
            &format!("login:email:{email}"),
            limits.per_email_unknown,
        )
        .await;
    };
    check(limits, &format!("login:ip:{addr}"), limits.per_address).await?;
    check(
        limits,
        &format!("login:email-ip:{email}:{addr}"),
        limits.per_email_address,
    )
    .await?;
    let since = chrono::Utc::now().timestamp() - limits.known_for.as_secs() as i64;
    let known = ctx
        .store()?
        .signed_in_from(&email, &addr.to_string(), since)
        .await?;
    if !known {
        check(
            limits,
            &format!("login:email:{email}"),
            limits.per_email_unknown,
        )
        .await?;
    }
    Ok(())
}

/// `signUp` per client address.
async fn throttle_sign_up(ctx: &Context<'_>) -> Result<(), AppError> {
    let (Ok(limits), Ok(ClientAddr(addr))) = (ctx.data::<LoginLimits>(), ctx.data::<ClientAddr>())
    else {
        return Ok(());
    };
    match limits.signups {
        Some(rate) => check(limits, &format!("signup:ip:{addr}"), rate).await,
        None => Ok(()),
    }
}

async fn check(limits: &LoginLimits, key: &str, rate: Rate) -> Result<(), AppError> {
    match limits.limiter.check(key, rate).await {
        Decision::Limited(wait) => Err(AppError::RateLimited {
            retry_after_secs: wait.as_millis().div_ceil(1000).max(1) as u64,
        }),
        Decision::Allowed => Ok(()),
    }
}

/// Remembers where the user signed in from, for `throttle_login`. Best effort: a failure here is logged, and
/// the sign-in stands.
async fn remember_address(ctx: &Context<'_>, user_id: i64) {
    let (Ok(ClientAddr(addr)), Ok(store)) = (ctx.data::<ClientAddr>(), ctx.store()) else {
        return;
    };
    if let Err(err) = store.record_sign_in(user_id, &addr.to_string()).await {
        tracing::warn!(error = ?err, "could not record a sign-in address");
    }
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
        throttle_sign_up(ctx).await?;
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
        remember_address(ctx, user.id).await;
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
        remember_address(ctx, user.id).await;
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

    /// Links an external identity provider's user to the signed-in account, so the provider's tokens sign in to
    /// it from then on. `token` is the provider's ID or access token; its email must be this account's, verified
    /// by the provider. The explicit step is the only way an identity joins an existing account (signing in with
    /// a provider token whose email has an account answers `CONFLICT`); admin accounts are never linked
    /// (`FORBIDDEN`), and the password keeps working.
    #[graphql(guard = "LoggedIn")]
    async fn link_identity(&self, ctx: &Context<'_>, token: String) -> async_graphql::Result<User> {
        let viewer = ctx.viewer();
        let id = viewer.require_user()?;
        if viewer.is_admin() {
            return Err(AppError::Forbidden(
                "Admin accounts cannot be linked to an identity provider.".into(),
            )
            .into());
        }
        let identity = ctx.auth()?.external_identity(token.trim()).await?;
        let store = ctx.store()?;
        let me = store
            .user_by_id(id)
            .await?
            .ok_or_else(|| AppError::NotFound("Your account no longer exists.".into()))?;
        if !identity.email_verified || !identity.email.as_str().eq_ignore_ascii_case(&me.email) {
            return Err(AppError::Forbidden(
                "The identity's email must be this account's, verified by the provider.".into(),
            )
            .into());
        }
        let row = store.link_external(id, &identity.external_id).await?;
        ctx.purge_after_commit(vec![tags::user(id)]);
        Ok(User::to_self(row))
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
