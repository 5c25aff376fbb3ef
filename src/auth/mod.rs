//! Who is asking: turns a request's `Authorization` header into the `Viewer` it runs as.
//!
//! - No header → `Viewer::Anonymous`.
//! - `Bearer <token>` that verifies → `Viewer::User`, with the role read from the database for this request.
//! - Anything else (a malformed header, a token that fails any check) → `UNAUTHENTICATED` (HTTP 401). A bad
//!   token is never quietly treated as anonymous: the client would otherwise see "missing" data and never
//!   learn that its session has ended.
//!
//! Tokens are routed by their header's `alg`: HS256 to Folio's own secret (`jwt`), RS256/ES256 to the external
//! identity provider's keys (`jwks`), if one is configured.

pub mod jwks;
pub mod jwt;
pub mod password;
mod viewer;

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

pub use jwt::OwnTokens;
pub use viewer::Viewer;

use crate::cache::{Cache, tags};
use crate::config::{AuthConfig, Environment, ExternalIdp};
use crate::domain::{DisplayName, Email};
use crate::error::AppError;
use crate::store::{ExternalUser, Role, Store, UserRow};

/// Verifies bearer tokens and resolves them to viewers.
pub struct Authenticator {
    own: OwnTokens,
    external: Option<External>,
    store: Store,
    /// Provisioning an external user changes data cached answers may hold.
    cache: Arc<Cache>,
}

struct External {
    jwks: jwks::Jwks,
    config: ExternalIdp,
    leeway_secs: u64,
}

/// A verified token's expiry.
#[derive(Deserialize)]
struct Expiry {
    exp: Option<u64>,
}

/// The claims Folio reads from an external provider's token (beyond those `Validation` checks).
#[derive(Deserialize)]
struct ExternalClaims {
    sub: String,
    email: Option<String>,
    name: Option<String>,
    /// A boolean, or the string `"true"` (some providers send that).
    #[serde(default)]
    email_verified: serde_json::Value,
    /// Everything else, where a configured role claim is looked up.
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Authenticator {
    pub fn new(
        config: &AuthConfig,
        env: Environment,
        store: Store,
        cache: Arc<Cache>,
    ) -> anyhow::Result<Self> {
        let external = match &config.external {
            Some(idp) => Some(External {
                jwks: jwks::Jwks::new(idp.jwks_url.clone(), idp.min_refresh)?,
                config: idp.clone(),
                leeway_secs: config.leeway_secs,
            }),
            None => None,
        };
        Ok(Self {
            own: OwnTokens::new(config, env)?,
            external,
            store,
            cache,
        })
    }

    /// Folio's own token issuer (for `signUp`, `login`, `folio token`).
    pub fn tokens(&self) -> &OwnTokens {
        &self.own
    }

    /// The viewer for a request's `Authorization` header value (`None`: no header).
    pub async fn viewer(&self, authorization: Option<&[u8]>) -> Result<Viewer, AppError> {
        Ok(self.session(authorization).await?.0)
    }

    /// The viewer and, for a token, when it expires (Unix seconds): a long-lived connection (a WebSocket) is
    /// closed then rather than left running on a dead credential.
    pub async fn session(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<(Viewer, Option<u64>), AppError> {
        let Some(raw) = authorization else {
            return Ok((Viewer::Anonymous, None));
        };
        let token = bearer_token(raw)?;
        let user = self.user_for(token).await?;
        // Read after the token verified: its claims are the issuer's.
        let expires = jsonwebtoken::dangerous::insecure_decode_claims::<Expiry>(token)
            .ok()
            .and_then(|claims| claims.exp);
        Ok((
            Viewer::User {
                id: user.id,
                role: user.role,
            },
            expires,
        ))
    }

    /// The external identity a provider's token names, verified but not signed in (for `linkIdentity`).
    pub async fn external_identity(&self, token: &str) -> Result<ExternalUser, AppError> {
        let external = self.external.as_ref().ok_or_else(|| {
            AppError::bad_input("No external identity provider is configured on this server.")
        })?;
        let header = jsonwebtoken::decode_header(token).map_err(jwt::rejection)?;
        external.identity(token, header.kid.as_deref()).await
    }

    async fn user_for(&self, token: &str) -> Result<UserRow, AppError> {
        let header = jsonwebtoken::decode_header(token).map_err(jwt::rejection)?;
        match header.alg {
            Algorithm::HS256 => {
                let id = self.own.verify(token)?;
                self.store.user_by_id(id).await?.ok_or_else(|| {
                    AppError::Unauthenticated("The token's user no longer exists.".into())
                })
            }
            Algorithm::RS256 | Algorithm::ES256 => match &self.external {
                Some(external) => {
                    let (user, changed) = external
                        .user_for(token, header.kid.as_deref(), &self.store)
                        .await?;
                    if changed {
                        // Logged and retried by the cache if Redis is down; the sign-in itself stands.
                        let _ = self
                            .cache
                            .purge(&[tags::USER_LIST.to_owned(), tags::user(user.id)])
                            .await;
                    }
                    Ok(user)
                }
                None => Err(AppError::Unauthenticated(
                    "Tokens from an external identity provider are not accepted here.".into(),
                )),
            },
            _ => Err(AppError::Unauthenticated(
                "The token's algorithm is not accepted.".into(),
            )),
        }
    }
}

impl External {
    async fn user_for(
        &self,
        token: &str,
        kid: Option<&str>,
        store: &Store,
    ) -> Result<(UserRow, bool), AppError> {
        let who = self.identity(token, kid).await?;
        store.provision_external(&who).await
    }

    /// The provider's user a token names, once the token verifies (signature, issuer, audience, times).
    async fn identity(&self, token: &str, kid: Option<&str>) -> Result<ExternalUser, AppError> {
        let key = self.jwks.key(kid).await?;
        // Pinned to the key's own algorithm: an RS256 key never verifies an ES256 header, or the reverse.
        let mut validation = Validation::new(key.alg);
        jwt::apply_rules(
            &mut validation,
            &self.config.issuer,
            &self.config.audience,
            self.leeway_secs,
        );
        let claims = jsonwebtoken::decode::<ExternalClaims>(token, &key.key, &validation)
            .map_err(jwt::rejection)?
            .claims;
        let email = claims
            .email
            .clone()
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| {
                AppError::Unauthenticated(
                    "The identity provider's token has no `email` claim; request the email scope."
                        .into(),
                )
            })?;
        let email = Email::parse(email).map_err(|_| {
            AppError::Unauthenticated(
                "The identity provider's `email` claim is not a valid email address.".into(),
            )
        })?;
        // The provider's name, cut to what a display name may be; else the address's local part.
        let display = |text: &str| DisplayName::parse(text.trim().chars().take(80).collect()).ok();
        let local_part = email.as_str().split('@').next().unwrap_or_default();
        let name = claims
            .name
            .as_deref()
            .and_then(display)
            .or_else(|| display(local_part))
            .or_else(|| display("reader"))
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!("no display name for a provider user"))
            })?;
        let email_verified = matches!(&claims.email_verified, serde_json::Value::Bool(true))
            || claims.email_verified.as_str() == Some("true");
        // With a role claim configured the provider is the source of truth: no (or an unknown) value is USER,
        // so a demotion at the provider is a demotion here.
        let role = self.config.role_claim.as_ref().map(|claim| {
            claims
                .rest
                .get(claim)
                .and_then(|v| v.as_str())
                .and_then(|v| Role::try_from(v.to_ascii_uppercase()).ok())
                .unwrap_or(Role::User)
        });
        Ok(ExternalUser {
            external_id: claims.sub,
            email,
            name,
            email_verified,
            role,
        })
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(raw: &[u8]) -> Result<&str, AppError> {
    let malformed =
        || AppError::Unauthenticated("The Authorization header must be `Bearer <token>`.".into());
    let value = std::str::from_utf8(raw).map_err(|_| malformed())?.trim();
    let (scheme, token) = value.split_once(' ').ok_or_else(malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() || token.contains(' ') {
        return Err(malformed());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn only_bearer_headers_carry_tokens() {
        assert_eq!(bearer_token(b"Bearer abc.def.ghi").unwrap(), "abc.def.ghi");
        assert_eq!(bearer_token(b"bearer  abc").unwrap(), "abc");
        for bad in [
            &b"Basic dXNlcjpwdw=="[..],
            b"Bearer",
            b"Bearer ",
            b"abc",
            b"Bearer a b",
        ] {
            assert!(
                bearer_token(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
