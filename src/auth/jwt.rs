//! Bearer tokens: Folio's own (HS256, issued by `signUp`, `login` and `folio token`) and an external identity
//! provider's (RS256/ES256, keys from its JWKS).
//!
//! Both are checked with the same rules: `exp`, `iss` and `aud` required, `nbf` honoured, a bounded leeway, and
//! the algorithm pinned per source: HS256 only against Folio's secret, RS256/ES256 only against the provider's
//! key with that `kid`, and only the algorithm that key is for. So neither `alg: none` nor an HS256 token
//! "signed" with a public RSA key can pass.

use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::{AuthConfig, Environment};
use crate::error::AppError;
use crate::store::Role;

/// Used for Folio's own tokens in development when `FOLIO_JWT_SECRET` is unset. Anyone can read it here, which
/// is the point of its name: tokens signed with it prove nothing, and production refuses to start without a
/// real secret.
pub const DEVELOPMENT_SECRET: &str = "folio-development-secret-never-use-in-production";

/// The claims of Folio's own tokens.
#[derive(Debug, Serialize, Deserialize)]
pub struct OwnClaims {
    /// The user id, as a string (JWT's `sub` is a string).
    pub sub: String,
    /// `USER` or `ADMIN` when issued; informational only (authorization reads the role from the database).
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
    pub aud: String,
}

/// Issues and verifies Folio's own HS256 tokens.
pub struct OwnTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl OwnTokens {
    /// Keys from `FOLIO_JWT_SECRET`, or the development secret (with a warning) when it is unset outside
    /// production. Production without a secret is refused earlier, by `Config::check_for_serving`.
    pub fn new(config: &AuthConfig, env: Environment) -> anyhow::Result<Self> {
        let secret: Vec<u8> = match (&config.jwt_secret, env) {
            (Some(secret), _) => secret.expose_secret().as_bytes().to_vec(),
            (None, Environment::Production) => {
                anyhow::bail!("FOLIO_JWT_SECRET must be set when FOLIO_ENV=production")
            }
            (None, Environment::Development) => {
                tracing::warn!(
                    "FOLIO_JWT_SECRET is not set: signing tokens with the public development secret; \
                     set it before exposing this instance"
                );
                DEVELOPMENT_SECRET.as_bytes().to_vec()
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        apply_rules(
            &mut validation,
            &config.token_issuer,
            &config.token_audience,
            config.leeway_secs,
        );
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            issuer: config.token_issuer.clone(),
            audience: config.token_audience.clone(),
            ttl: config.token_ttl,
        })
    }

    /// A signed token for `user_id`, valid for the configured lifetime.
    pub fn issue(&self, user_id: i64, role: Role) -> Result<String, AppError> {
        let now = chrono::Utc::now().timestamp();
        let claims = OwnClaims {
            sub: user_id.to_string(),
            role: role.as_str().to_owned(),
            iat: now,
            exp: now + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| AppError::internal(anyhow::anyhow!("signing a token failed: {e}")))
    }

    /// The user id a valid token names.
    pub fn verify(&self, token: &str) -> Result<i64, AppError> {
        let data = jsonwebtoken::decode::<OwnClaims>(token, &self.decoding, &self.validation)
            .map_err(rejection)?;
        data.claims
            .sub
            .parse::<i64>()
            .map_err(|_| AppError::Unauthenticated("The token's subject is not a user id.".into()))
    }
}

/// The rules every accepted token meets, whatever its source.
pub(crate) fn apply_rules(v: &mut Validation, issuer: &str, audience: &str, leeway_secs: u64) {
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.validate_exp = true;
    v.validate_nbf = true;
    v.leeway = leeway_secs;
}

/// Why a token was refused, as the client may read it. The detail is also logged at debug level.
pub(crate) fn rejection(err: jsonwebtoken::errors::Error) -> AppError {
    tracing::debug!(error = %err, "token rejected");
    let message = match err.kind() {
        ErrorKind::ExpiredSignature => "The token has expired.".to_owned(),
        ErrorKind::ImmatureSignature => "The token is not valid yet (nbf).".to_owned(),
        ErrorKind::InvalidIssuer => "The token's issuer is not accepted.".to_owned(),
        ErrorKind::InvalidAudience => "The token is not meant for this service (aud).".to_owned(),
        ErrorKind::InvalidSignature => "The token's signature is invalid.".to_owned(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            "The token's algorithm is not accepted.".to_owned()
        }
        ErrorKind::MissingRequiredClaim(claim) => format!("The token lacks the `{claim}` claim."),
        ErrorKind::InvalidClaimFormat(claim) => {
            format!("The token's `{claim}` claim has the wrong type.")
        }
        _ => "The token is malformed.".to_owned(),
    };
    AppError::Unauthenticated(message)
}
