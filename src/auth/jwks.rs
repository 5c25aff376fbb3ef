//! The external identity provider's signing keys, fetched from its JWKS URL and cached.
//!
//! - Keys are kept for the lifetime the JWKS response gives (`Cache-Control: max-age`, else 5 minutes, at most
//!   a day), then fetched again.
//! - A token naming a `kid` the cache does not hold triggers a fetch (the provider may have rotated keys), but
//!   no more than one per `FOLIO_JWKS_MIN_REFRESH_SECS`, and concurrent misses share that one fetch: a flood of
//!   made-up `kid`s costs the provider at most one request per interval.
//! - If a fetch fails, the keys already known stay in use and the failure is logged.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};

use crate::error::AppError;

/// How long keys are kept when the JWKS response does not say.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a key set is trusted without asking again, whatever the response says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One verification key and the only algorithm it may verify.
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    expires: Option<Instant>,
}

/// The provider's keys and when to fetch them again.
pub struct Jwks {
    client: reqwest::Client,
    url: String,
    min_refresh: Duration,
    keys: RwLock<KeySet>,
    /// Held while fetching; holds when the last fetch started.
    fetching: Mutex<Option<Instant>>,
}

impl Jwks {
    pub fn new(url: String, min_refresh: Duration) -> anyhow::Result<Self> {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .user_agent(concat!("folio/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url,
            min_refresh,
            keys: RwLock::new(KeySet::default()),
            fetching: Mutex::new(None),
        })
    }

    /// The key a token's header names. A token without `kid` is accepted only while the provider publishes
    /// exactly one key.
    pub async fn key(&self, kid: Option<&str>) -> Result<VerifyingKey, AppError> {
        if let Some(found) = self.lookup(kid, true).await {
            return Ok(found);
        }
        self.refresh().await;
        // After a refresh (or a refused one), stale keys still beat no keys.
        self.lookup(kid, false).await.ok_or_else(|| {
            AppError::Unauthenticated(match kid {
                Some(_) => "The token's signing key (kid) is not known.".into(),
                None => "The token does not name its signing key (kid).".into(),
            })
        })
    }

    async fn lookup(&self, kid: Option<&str>, fresh_only: bool) -> Option<VerifyingKey> {
        let set = self.keys.read().await;
        let fresh = set.expires.is_some_and(|at| Instant::now() < at);
        if fresh_only && !fresh {
            return None;
        }
        match kid {
            Some(kid) => set.keys.get(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.values().next().cloned(),
            None => None,
        }
    }

    /// Fetches the key set, unless the last fetch started less than the minimum interval ago. Tasks that miss
    /// at the same moment queue on the lock, and (with a non-zero interval) all but the first find that a fetch
    /// has just happened. The interval also spaces out refreshes due to expiry, so keys live at least that long.
    async fn refresh(&self) {
        let mut last = self.fetching.lock().await;
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < self.min_refresh) {
            tracing::debug!("JWKS refresh skipped: the last one was too recent");
            return;
        }
        *last = Some(now);
        match self.fetch().await {
            Ok((keys, lifetime)) => {
                tracing::info!(
                    keys = keys.len(),
                    lifetime_s = lifetime.as_secs(),
                    "fetched JWKS"
                );
                let mut set = self.keys.write().await;
                set.keys = keys;
                set.expires = Some(Instant::now() + lifetime);
            }
            Err(err) => {
                tracing::warn!(error = format!("{err:#}"), url = %self.url, "JWKS fetch failed")
            }
        }
    }

    async fn fetch(&self) -> anyhow::Result<(HashMap<String, VerifyingKey>, Duration)> {
        let response = self
            .client
            .get(&self.url)
            .send()
            .await?
            .error_for_status()?;
        let lifetime = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .map(cache_lifetime)
            .unwrap_or(DEFAULT_LIFETIME)
            .min(MAX_LIFETIME);
        let set: JwkSet = response.json().await?;
        let mut keys = HashMap::new();
        for (i, jwk) in set.keys.iter().enumerate() {
            let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
            match verifying_key(jwk) {
                Some(key) => {
                    keys.insert(kid, key);
                }
                None => tracing::debug!(kid, "JWKS key skipped: not an RS256/ES256 signing key"),
            }
        }
        Ok((keys, lifetime))
    }
}

/// The algorithm a JWK may verify: the one it declares, or the one its key type implies. Only RS256 and ES256
/// (P-256) signing keys are used.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey { key, alg })
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` mean "ask again next time".
fn cache_lifetime(value: &str) -> Duration {
    let mut lifetime = DEFAULT_LIFETIME;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Duration::ZERO;
        }
        if let Some(Ok(secs)) = lower
            .strip_prefix("max-age=")
            .map(|s| s.trim_matches('"').parse::<u64>())
        {
            lifetime = Duration::from_secs(secs);
        }
    }
    lifetime
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_sets_the_lifetime() {
        assert_eq!(
            cache_lifetime("public, max-age=120"),
            Duration::from_secs(120)
        );
        assert_eq!(cache_lifetime("no-store"), Duration::ZERO);
        assert_eq!(cache_lifetime("public"), DEFAULT_LIFETIME);
    }
}
