//! Stripe webhook signatures, checked the way Stripe's own libraries check them.
//!
//! Stripe sends `Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`. Each `v1` is
//! HMAC-SHA256(secret, `"<t>.<raw body>"`), one per secret the endpoint currently has (two while a rolled
//! secret is still valid). Other schemes (`v0`, the test-mode scheme, or ones Stripe adds later) are ignored.
//! A delivery is genuine when any `v1` matches any configured secret, compared in constant time, and its
//! timestamp lies within the tolerance of the server's clock. The timestamp is covered by the signature, so
//! the tolerance is what stops an attacker from replaying a captured request later.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use crate::config::StripeConfig;
use crate::error::Code;

type HmacSha256 = Hmac<Sha256>;

/// Length of an HMAC-SHA256 tag in bytes (64 hex digits).
const TAG_LEN: usize = 32;

/// Why a delivery's `Stripe-Signature` was refused. Each maps to a stable error code for the response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureError {
    /// No header, or an empty one.
    Missing,
    /// The header cannot be read: no timestamp, a timestamp that is not a number, an element without `=`,
    /// a `v1` that is not 64 hex digits.
    Malformed(&'static str),
    /// Well-formed, but without any `v1` signature (only other schemes).
    NoV1,
    /// No `v1` matches any configured secret.
    Mismatch,
    /// Signed correctly, but the timestamp is too far from now. `skew_secs` is now minus the timestamp
    /// (positive: in the past).
    OutOfTolerance { skew_secs: i64, tolerance_secs: u64 },
}

impl SignatureError {
    /// The stable code clients (and Stripe's dashboard, which shows our answer) see.
    pub fn code(&self) -> Code {
        match self {
            Self::Missing => Code::MissingSignature,
            Self::Malformed(_) => Code::MalformedSignature,
            Self::NoV1 => Code::NoV1Signature,
            Self::Mismatch => Code::SignatureMismatch,
            Self::OutOfTolerance { .. } => Code::TimestampOutOfTolerance,
        }
    }

    /// A short explanation, safe to show: it never contains a secret or an expected signature.
    pub fn message(&self) -> String {
        match self {
            Self::Missing => "The Stripe-Signature header is missing.".to_owned(),
            Self::Malformed(why) => format!("The Stripe-Signature header is malformed: {why}."),
            Self::NoV1 => "The Stripe-Signature header has no v1 signature.".to_owned(),
            Self::Mismatch => {
                "No v1 signature matches the payload for any configured endpoint secret.".to_owned()
            }
            Self::OutOfTolerance {
                skew_secs,
                tolerance_secs,
            } => format!(
                "The signature timestamp is {} s {} the server's clock; at most {tolerance_secs} s is accepted.",
                skew_secs.unsigned_abs(),
                if *skew_secs >= 0 {
                    "behind"
                } else {
                    "ahead of"
                }
            ),
        }
    }
}

/// The parts of a `Stripe-Signature` header that matter: its timestamp and its `v1` tags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    pub timestamp: i64,
    pub v1: Vec<[u8; TAG_LEN]>,
}

/// Parses a header value. Elements are `key=value` separated by commas (whitespace around them is
/// tolerated); keys other than `t` and `v1` are skipped, as Stripe's libraries do.
pub fn parse_header(header: &str) -> Result<SignatureHeader, SignatureError> {
    if header.trim().is_empty() {
        return Err(SignatureError::Missing);
    }
    let mut timestamp = None;
    let mut v1 = Vec::new();
    for element in header.split(',').map(str::trim) {
        let Some((key, value)) = element.split_once('=') else {
            return Err(SignatureError::Malformed("every element must be key=value"));
        };
        match key.trim() {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed("more than one timestamp (t=)"));
                }
                let t = value
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| SignatureError::Malformed("the timestamp (t=) is not a number"))?;
                timestamp = Some(t);
            }
            "v1" => {
                let mut tag = [0u8; TAG_LEN];
                hex::decode_to_slice(value.trim(), &mut tag).map_err(|_| {
                    SignatureError::Malformed("a v1 signature is not 64 hexadecimal digits")
                })?;
                v1.push(tag);
            }
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(SignatureError::Malformed("no timestamp (t=)"));
    };
    if v1.is_empty() {
        return Err(SignatureError::NoV1);
    }
    Ok(SignatureHeader { timestamp, v1 })
}

/// Checks deliveries against the endpoint's secrets. Built only when at least one secret is configured.
pub struct Verifier {
    secrets: Vec<SecretString>,
    tolerance_secs: u64,
}

/// Secrets stay out of logs even if a `Verifier` is debug-printed.
impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.secrets.len())
            .field("tolerance_secs", &self.tolerance_secs)
            .finish()
    }
}

impl Verifier {
    /// `None` when no secret is configured: the webhook must then refuse everything rather than accept it.
    pub fn from_config(config: &StripeConfig) -> Option<Self> {
        Self::new(config.webhook_secrets.clone(), config.tolerance_secs)
    }

    pub fn new(secrets: Vec<SecretString>, tolerance_secs: u64) -> Option<Self> {
        (!secrets.is_empty()).then_some(Self {
            secrets,
            tolerance_secs,
        })
    }

    /// Verifies `header` (the `Stripe-Signature` value, if any) for `body` at `now` (unix seconds) and returns
    /// the signed timestamp.
    ///
    /// The signature is checked before the timestamp, as Stripe's Node and Python libraries do, so only a
    /// holder of the secret ever learns that a timestamp was the problem. The timestamp is accepted when it is
    /// at most `tolerance` seconds in the past (Stripe rejects `t < now - tolerance`) or in the future.
    pub fn verify(
        &self,
        header: Option<&str>,
        body: &[u8],
        now: i64,
    ) -> Result<i64, SignatureError> {
        let parsed = parse_header(header.ok_or(SignatureError::Missing)?)?;
        if !self.any_matches(&parsed, body) {
            return Err(SignatureError::Mismatch);
        }
        let skew_secs = now.saturating_sub(parsed.timestamp);
        if now.abs_diff(parsed.timestamp) > self.tolerance_secs {
            return Err(SignatureError::OutOfTolerance {
                skew_secs,
                tolerance_secs: self.tolerance_secs,
            });
        }
        Ok(parsed.timestamp)
    }

    /// Whether any `v1` tag is the HMAC of the signed payload under any secret. `verify_slice` compares in
    /// constant time, so the time taken reveals nothing about how close a forged tag came.
    fn any_matches(&self, header: &SignatureHeader, body: &[u8]) -> bool {
        self.secrets.iter().any(|secret| {
            signed_payload_mac(secret.expose_secret().as_bytes(), header.timestamp, body)
                .is_some_and(|mac| {
                    header
                        .v1
                        .iter()
                        .any(|tag| mac.clone().verify_slice(tag).is_ok())
                })
        })
    }
}

/// The MAC state after feeding `"<t>.<body>"`, ready to finalise or verify. `None` only if the key were
/// refused, which HMAC never does (keys of any length are accepted; long ones are hashed).
fn signed_payload_mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<HmacSha256> {
    let mut mac = HmacSha256::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

/// A `Stripe-Signature` value for `body`, made the way Stripe makes it: one `v1` per secret (Stripe signs with
/// every secret the endpoint has while a rolled one is still valid). For local tools that play Stripe
/// (`examples/send_webhook.rs`); never used to check a delivery.
pub fn sign(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        if let Some(mac) = signed_payload_mac(secret.as_bytes(), timestamp, body) {
            header.push_str(",v1=");
            header.push_str(&hex::encode(mac.finalize().into_bytes()));
        }
    }
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const NOW: i64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"ping","created":1700000000}"#;
    /// `printf '1700000000.{"id":"evt_1","type":"ping","created":1700000000}' |
    ///  openssl dgst -sha256 -hmac whsec_test_secret`: an independent computation of the expected tag.
    const KNOWN_TAG: &str = "9347c86ab6892e90cc3f55c92e6d77d1463b37fe537422abb825927486e02f63";

    fn verifier(secrets: &[&str]) -> Verifier {
        Verifier::new(
            secrets.iter().map(|s| SecretString::from(*s)).collect(),
            300,
        )
        .unwrap()
    }

    #[test]
    fn signing_matches_an_independent_hmac() {
        assert_eq!(
            sign(&[SECRET], NOW, BODY),
            format!("t={NOW},v1={KNOWN_TAG}")
        );
    }

    #[test]
    fn parses_timestamp_and_every_v1_and_skips_other_schemes() {
        let a = "a".repeat(64);
        let b = "B".repeat(64);
        let h = parse_header(&format!("t=42, v0={a},v1={a},scheme9=x,v1={b}")).unwrap();
        assert_eq!(h.timestamp, 42);
        assert_eq!(h.v1, vec![[0xaa; 32], [0xbb; 32]]);
    }

    #[test]
    fn header_errors_are_specific() {
        let hex = "a".repeat(64);
        assert_eq!(parse_header(""), Err(SignatureError::Missing));
        assert_eq!(parse_header("   "), Err(SignatureError::Missing));
        let malformed = [
            format!("v1={hex}"),
            format!("t=soon,v1={hex}"),
            format!("t=1,t=2,v1={hex}"),
            format!("t=1,v1={hex},garbage"),
            format!("t=1,,v1={hex}"),
            "t=1,v1=zz".to_owned(),
            format!("t=1,v1={}", &hex[..62]),
            format!("t=1,v1={hex}00"),
            "nonsense".to_owned(),
        ];
        for header in malformed {
            let err = parse_header(&header).unwrap_err();
            assert_eq!(err.code().as_str(), "MALFORMED_SIGNATURE", "{header}");
        }
        assert_eq!(
            parse_header(&format!("t=1,v0={hex}")),
            Err(SignatureError::NoV1)
        );
        assert_eq!(parse_header("t=1"), Err(SignatureError::NoV1));
    }

    #[test]
    fn accepts_a_valid_signature_and_refuses_changes() {
        let v = verifier(&[SECRET]);
        let header = sign(&[SECRET], NOW, BODY);
        assert_eq!(v.verify(Some(&header), BODY, NOW), Ok(NOW));
        assert_eq!(v.verify(None, BODY, NOW), Err(SignatureError::Missing));
        // Another body, another timestamp, another secret: all mismatches.
        let other_body = br#"{"id":"evt_1","type":"ping","created":1700000001}"#;
        assert_eq!(
            v.verify(Some(&header), other_body, NOW),
            Err(SignatureError::Mismatch)
        );
        let moved = header.replacen(&NOW.to_string(), &(NOW + 1).to_string(), 1);
        assert_eq!(
            v.verify(Some(&moved), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
        let foreign = sign(&["whsec_someone_else"], NOW, BODY);
        assert_eq!(
            v.verify(Some(&foreign), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_v1_under_any_secret_matches() {
        let old = sign(&["whsec_old"], NOW, BODY);
        let new = sign(&["whsec_new"], NOW, BODY);
        // Stripe during a roll: both tags in one header; Folio already switched to the new secret only.
        let both = sign(&["whsec_old", "whsec_new"], NOW, BODY);
        assert_eq!(
            both,
            format!("{old},v1={}", new.split_once(",v1=").unwrap().1)
        );
        assert_eq!(
            verifier(&["whsec_new"]).verify(Some(&both), BODY, NOW),
            Ok(NOW)
        );
        // Folio holds both secrets; Stripe signs with the second only.
        let v = verifier(&["whsec_old", "whsec_new"]);
        assert_eq!(v.verify(Some(&new), BODY, NOW), Ok(NOW));
        assert_eq!(v.verify(Some(&old), BODY, NOW), Ok(NOW));
        assert_eq!(
            verifier(&["whsec_other"]).verify(Some(&both), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn tolerance_is_inclusive_at_300_seconds_on_both_sides() {
        let v = verifier(&[SECRET]);
        let check = |t: i64| v.verify(Some(&sign(&[SECRET], t, BODY)), BODY, NOW);
        assert_eq!(check(NOW - 300), Ok(NOW - 300));
        assert_eq!(check(NOW + 300), Ok(NOW + 300));
        assert_eq!(
            check(NOW - 301),
            Err(SignatureError::OutOfTolerance {
                skew_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            check(NOW + 301),
            Err(SignatureError::OutOfTolerance {
                skew_secs: -301,
                tolerance_secs: 300
            })
        );
        // Extreme timestamps neither overflow nor pass.
        for t in [i64::MIN, i64::MAX, 0] {
            assert_eq!(
                check(t).unwrap_err().code().as_str(),
                "TIMESTAMP_OUT_OF_TOLERANCE"
            );
        }
    }

    #[test]
    fn a_forged_stale_delivery_is_a_mismatch_not_a_timing_hint() {
        let v = verifier(&[SECRET]);
        let forged = format!("t={},v1={}", NOW - 10_000, "0".repeat(64));
        assert_eq!(
            v.verify(Some(&forged), BODY, NOW),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!("{:?}", verifier(&[SECRET]));
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
