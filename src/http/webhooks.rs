//! `POST /api/webhooks/stripe`: Stripe's billing events, outside GraphQL.
//!
//! Thin on purpose: read the raw body (the signature covers its exact bytes, so it is never parsed before it is
//! verified), hand it with the `Stripe-Signature` header to `billing::receive`, let the store record and apply
//! the event in one transaction, answer. Refusals are 400 with `{"error": {"code", "message"}}` and a log line
//! saying why; a server-side failure is 500 (or 503) so that Stripe retries; with no secret configured every
//! delivery gets 503 rather than being accepted unchecked.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;

use super::state::AppState;
use crate::billing::{self, SignatureError, WebhookError};
use crate::cache::tags;
use crate::error::{Code, plain_error_body};
use crate::store::{BillingAction, BillingEvent, EventOutcome, IgnoreReason};

const STRIPE_SIGNATURE: HeaderName = HeaderName::from_static("stripe-signature");

/// Receives one delivery.
pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let received_at = Utc::now();
    let Some(verifier) = state.stripe.as_deref() else {
        tracing::warn!("Stripe webhook delivery refused: STRIPE_WEBHOOK_SECRET is not set");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::WebhookNotConfigured,
            "The Stripe webhook is not configured on this server (no endpoint secret is set)."
                .into(),
        );
    };
    let received = body.map_err(body_error).and_then(|body| {
        let signature = signature_header(&headers)?;
        billing::receive(verifier, signature, &body, received_at.timestamp())
    });
    let event = match received {
        Ok(event) => event,
        Err(err) => return rejected(&err),
    };
    match state.store.apply_stripe_event(&event, received_at).await {
        Ok(outcome) => {
            log_outcome(&event, outcome);
            if let Some((user_id, plan)) = outcome.plan_changed_for() {
                // The transaction has committed: drop every cached answer about this user, so `User.plan`
                // shows the new plan at once. A failed purge is logged and retried by the cache, not answered
                // with 500: the plan change itself stands, and a retry by Stripe would be a duplicate.
                if let Err(err) = state.cache.purge(&[tags::user(user_id)]).await {
                    tracing::warn!(
                        user_id,
                        code = err.code(),
                        "could not purge the cache after a plan change"
                    );
                }
                tracing::info!(
                    user_id,
                    plan = plan.as_str(),
                    "plan changed by a Stripe event"
                );
            }
            Json(json!({ "received": true, "outcome": outcome.as_str() })).into_response()
        }
        // Logged inside; the masked 500 (or 503 for an unreachable database) makes Stripe retry later.
        Err(err) => err.into_response(),
    }
}

/// The `Stripe-Signature` value, if sent. Two of them would be ambiguous, so that is malformed too.
fn signature_header(headers: &HeaderMap) -> Result<Option<&str>, WebhookError> {
    let mut values = headers.get_all(STRIPE_SIGNATURE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(SignatureError::Malformed("more than one Stripe-Signature header").into());
    }
    let value = value
        .to_str()
        .map_err(|_| SignatureError::Malformed("it is not ASCII text"))?;
    Ok(Some(value))
}

/// axum refuses an over-limit body with its own 413 text; the webhook answers like every other refusal.
fn body_error(rejection: BytesRejection) -> WebhookError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        WebhookError::PayloadTooLarge
    } else {
        WebhookError::UnreadableBody
    }
}

fn rejected(err: &WebhookError) -> Response {
    let code = err.code();
    let message = err.message();
    tracing::warn!(code = code.as_str(), reason = %message, "Stripe webhook delivery refused");
    error(StatusCode::BAD_REQUEST, code, message)
}

fn error(status: StatusCode, code: Code, message: String) -> Response {
    (status, Json(plain_error_body(code, &message))).into_response()
}

/// One line per processed event; a warning when the event names no Folio user, since that usually means a
/// misconfigured checkout (no `client_reference_id`) or a customer created outside Folio.
fn log_outcome(event: &BillingEvent, outcome: EventOutcome) {
    let (id, kind, result) = (
        event.stripe_event_id.as_str(),
        event.event_type.as_str(),
        outcome.as_str(),
    );
    match (&event.action, outcome) {
        (BillingAction::Checkout { user_id, .. }, EventOutcome::UnknownUser) => {
            tracing::warn!(
                event_id = id,
                event_type = kind,
                user_id,
                "Stripe event names no Folio user; recorded and ignored"
            );
        }
        (BillingAction::Subscription { customer, .. }, EventOutcome::UnknownCustomer) => {
            tracing::warn!(event_id = id, event_type = kind, customer = %customer, "Stripe customer is not linked to a Folio user; recorded and ignored");
        }
        (BillingAction::Ignore(reason), _) if *reason != IgnoreReason::UnhandledType => {
            tracing::warn!(
                event_id = id,
                event_type = kind,
                reason = reason.as_str(),
                "Stripe event recorded and ignored"
            );
        }
        _ => tracing::info!(
            event_id = id,
            event_type = kind,
            outcome = result,
            "Stripe event processed"
        ),
    }
}
