//! Password hashing with argon2id (OWASP's parameters, the crate's defaults).
//!
//! Hashing costs tens of milliseconds of CPU by design, so it runs on the blocking pool and never stalls the
//! async workers that serve other requests.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

use crate::error::AppError;

/// Hashes a password into a PHC string (`$argon2id$v=19$...`) with a fresh random salt.
pub async fn hash(password: String) -> Result<String, AppError> {
    blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing a password failed: {e}")))
    })
    .await
}

/// A hash of a random string, checked when the account does not exist (or has no password) so that a login
/// for an unknown email takes as long as one with a wrong password.
static DECOY: LazyLock<Option<String>> = LazyLock::new(|| {
    let random = uuid::Uuid::new_v4().to_string();
    Argon2::default()
        .hash_password(random.as_bytes())
        .map(|h| h.to_string())
        .ok()
});

/// Whether `password` matches `stored`. `None` (no such account, or one without a password) is never a match,
/// but costs the same time as a real check.
pub async fn verify(password: String, stored: Option<String>) -> Result<bool, AppError> {
    blocking(move || {
        let (hash, real) = match stored {
            Some(hash) => (hash, true),
            None => (DECOY.clone().unwrap_or_default(), false),
        };
        let Ok(parsed) = PasswordHash::new(&hash) else {
            // A corrupt stored hash is a server problem, but it must not let anyone in either.
            if real {
                tracing::error!("a stored password hash cannot be parsed");
            }
            return Ok(false);
        };
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(real && matches)
    })
    .await
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AppError> + Send + 'static,
) -> Result<T, AppError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::internal(anyhow::anyhow!("password task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = super::hash("correct horse battery".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(
            super::verify("correct horse battery".into(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !super::verify("wrong horse battery".into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!super::verify("anything at all".into(), None).await.unwrap());
    }
}
