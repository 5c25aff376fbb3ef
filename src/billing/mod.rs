//! Billing through Stripe: turning a webhook delivery into a verified `BillingEvent` the store can apply.
//!
//! `signature` checks that Stripe sent the bytes (and recently); `event` reads what they mean for a user's
//! plan. Neither knows HTTP or SQL: `http::webhooks` feeds them the header and body, `store::billing` records
//! and applies the result.

pub mod event;
pub mod signature;

use crate::error::Code;
use crate::store::BillingEvent;
pub use event::EventError;
pub use signature::{SignatureError, Verifier};

/// The largest body accepted. Stripe's events are a few kilobytes; anything near this is not from Stripe.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a delivery was refused before anything was processed. Every variant is the sender's problem (HTTP 400);
/// none of them is ever a server error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookError {
    Signature(SignatureError),
    /// The body is larger than `MAX_BODY_BYTES`.
    PayloadTooLarge,
    /// The body could not be read (the client went away or sent a broken stream).
    UnreadableBody,
    Event(EventError),
}

impl From<SignatureError> for WebhookError {
    fn from(err: SignatureError) -> Self {
        Self::Signature(err)
    }
}

impl From<EventError> for WebhookError {
    fn from(err: EventError) -> Self {
        Self::Event(err)
    }
}

impl WebhookError {
    /// The stable code in `{"error": {"code": ...}}`.
    pub fn code(&self) -> Code {
        match self {
            Self::Signature(err) => err.code(),
            Self::PayloadTooLarge => Code::PayloadTooLarge,
            Self::UnreadableBody => Code::UnreadableBody,
            Self::Event(EventError::InvalidJson) => Code::InvalidJson,
            Self::Event(EventError::InvalidEvent(_)) => Code::InvalidEvent,
        }
    }

    /// A short explanation for the sender (and the log).
    pub fn message(&self) -> String {
        match self {
            Self::Signature(err) => err.message(),
            Self::PayloadTooLarge => format!("The body is larger than {MAX_BODY_BYTES} bytes."),
            Self::UnreadableBody => "The request body could not be read.".to_owned(),
            Self::Event(EventError::InvalidJson) => "The body is not valid JSON.".to_owned(),
            Self::Event(EventError::InvalidEvent(why)) => {
                format!("The body is not a usable Stripe event: {why}.")
            }
        }
    }
}

/// Verifies a delivery (`signature`: the `Stripe-Signature` value, if sent) at `now` (unix seconds) and reads
/// its event. The signature comes first: nothing about an unverified body is looked at, not even whether it is
/// JSON.
pub fn receive(
    verifier: &Verifier,
    signature: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<BillingEvent, WebhookError> {
    verifier.verify(signature, body, now)?;
    Ok(event::parse(body)?)
}
