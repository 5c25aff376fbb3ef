//! Verified Stripe event bodies → `BillingEvent`: which Folio user an event is about and what it means for
//! their plan. Pure: no I/O, so every mapping is unit-tested here.
//!
//! - `checkout.session.completed`: `client_reference_id` is the Folio user id (the frontend sets it when it
//!   creates the session), `customer` the Stripe customer to link; plan → PRO. A session whose
//!   `payment_status` is `unpaid` (a delayed payment method that has not cleared) only links the customer: the
//!   subscription's own events grant PRO once it is active.
//! - `customer.subscription.created` / `.updated`: by `status`; `.deleted` → FREE. The user is found by customer.
//! - Anything else: recorded and ignored.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::store::{BillingAction, BillingEvent, IgnoreReason, Plan};

/// Why a verified body is not an event Folio can record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventError {
    /// Not JSON at all.
    InvalidJson,
    /// JSON, but not shaped like a Stripe event (no `id`, `type` or `created`).
    InvalidEvent(&'static str),
}

/// The envelope every Stripe event has.
#[derive(Deserialize)]
struct Envelope {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    created: i64,
    #[serde(default)]
    data: Data,
}

#[derive(Default, Deserialize)]
struct Data {
    #[serde(default)]
    object: Value,
}

/// Parses a verified body.
pub fn parse(body: &[u8]) -> Result<BillingEvent, EventError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            EventError::InvalidEvent("it needs a string id and type and a numeric created")
        } else {
            EventError::InvalidJson
        }
    })?;
    if envelope.id.trim().is_empty() {
        return Err(EventError::InvalidEvent("the event id is empty"));
    }
    let created: DateTime<Utc> = DateTime::from_timestamp(envelope.created, 0)
        .ok_or(EventError::InvalidEvent("created is not a valid time"))?;
    let action = action_for(&envelope.kind, &envelope.data.object);
    Ok(BillingEvent {
        stripe_event_id: envelope.id,
        event_type: envelope.kind,
        created,
        action,
    })
}

fn action_for(kind: &str, object: &Value) -> BillingAction {
    match kind {
        "checkout.session.completed" => checkout(object),
        "customer.subscription.created" | "customer.subscription.updated" => {
            let status = object.get("status").and_then(Value::as_str).unwrap_or("");
            subscription(object, plan_for_status(status))
        }
        "customer.subscription.deleted" => subscription(object, Some(Plan::Free)),
        _ => BillingAction::Ignore(IgnoreReason::UnhandledType),
    }
}

fn checkout(session: &Value) -> BillingAction {
    let user_id = session
        .get("client_reference_id")
        .and_then(Value::as_str)
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|id| *id > 0);
    let Some(user_id) = user_id else {
        return BillingAction::Ignore(IgnoreReason::NoUserReference);
    };
    let unpaid = session.get("payment_status").and_then(Value::as_str) == Some("unpaid");
    BillingAction::Checkout {
        user_id,
        customer: object_id(session.get("customer")),
        plan: (!unpaid).then_some(Plan::Pro),
    }
}

fn subscription(subscription: &Value, plan: Option<Plan>) -> BillingAction {
    match object_id(subscription.get("customer")) {
        Some(customer) => BillingAction::Subscription { customer, plan },
        None => BillingAction::Ignore(IgnoreReason::NoCustomer),
    }
}

/// The plan a subscription status means; `None` for statuses that decide nothing yet.
///
/// `paused` (a trial ended without a payment method) is FREE too: Stripe stops invoicing, so the customer is
/// not paying. `incomplete` (first payment pending) and statuses Folio does not know leave the plan as is.
pub fn plan_for_status(status: &str) -> Option<Plan> {
    match status {
        "active" | "trialing" => Some(Plan::Pro),
        "canceled" | "unpaid" | "incomplete_expired" | "past_due" | "paused" => Some(Plan::Free),
        _ => None,
    }
}

/// An id field as Stripe sends it: the id string, or (when expanded) an object with an `id`.
fn object_id(value: Option<&Value>) -> Option<String> {
    let id = match value? {
        Value::String(id) => id.as_str(),
        Value::Object(object) => object.get("id")?.as_str()?,
        _ => return None,
    };
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, object: Value) -> BillingEvent {
        let body = json!({ "id": "evt_1", "object": "event", "type": kind, "created": 1_700_000_000,
                           "data": { "object": object } });
        parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn checkout_links_the_customer_and_grants_pro() {
        let e = event(
            "checkout.session.completed",
            json!({ "client_reference_id": "42", "customer": "cus_1", "payment_status": "paid" }),
        );
        assert_eq!(e.stripe_event_id, "evt_1");
        assert_eq!(e.created.timestamp(), 1_700_000_000);
        assert_eq!(
            e.action,
            BillingAction::Checkout {
                user_id: 42,
                customer: Some("cus_1".into()),
                plan: Some(Plan::Pro)
            }
        );
        let e = event(
            "checkout.session.completed",
            json!({ "client_reference_id": "42", "customer": { "id": "cus_2" }, "payment_status": "unpaid" }),
        );
        assert_eq!(
            e.action,
            BillingAction::Checkout {
                user_id: 42,
                customer: Some("cus_2".into()),
                plan: None
            }
        );
        for reference in [json!(null), json!("abc"), json!("-3"), json!(42)] {
            let e = event(
                "checkout.session.completed",
                json!({ "client_reference_id": reference }),
            );
            assert_eq!(
                e.action,
                BillingAction::Ignore(IgnoreReason::NoUserReference),
                "{reference}"
            );
        }
    }

    #[test]
    fn subscription_statuses_map_to_plans() {
        for (status, plan) in [
            ("active", Some(Plan::Pro)),
            ("trialing", Some(Plan::Pro)),
            ("canceled", Some(Plan::Free)),
            ("unpaid", Some(Plan::Free)),
            ("incomplete_expired", Some(Plan::Free)),
            ("past_due", Some(Plan::Free)),
            ("paused", Some(Plan::Free)),
            ("incomplete", None),
            ("something_new", None),
        ] {
            for kind in [
                "customer.subscription.created",
                "customer.subscription.updated",
            ] {
                let e = event(kind, json!({ "customer": "cus_1", "status": status }));
                assert_eq!(
                    e.action,
                    BillingAction::Subscription {
                        customer: "cus_1".into(),
                        plan
                    },
                    "{kind} {status}"
                );
            }
        }
        let e = event(
            "customer.subscription.deleted",
            json!({ "customer": "cus_1", "status": "canceled" }),
        );
        assert_eq!(
            e.action,
            BillingAction::Subscription {
                customer: "cus_1".into(),
                plan: Some(Plan::Free)
            }
        );
        let e = event(
            "customer.subscription.updated",
            json!({ "status": "active" }),
        );
        assert_eq!(e.action, BillingAction::Ignore(IgnoreReason::NoCustomer));
    }

    #[test]
    fn other_types_are_ignored_and_bad_bodies_refused() {
        assert_eq!(
            event("invoice.paid", json!({})).action,
            BillingAction::Ignore(IgnoreReason::UnhandledType)
        );
        assert_eq!(parse(b"not json"), Err(EventError::InvalidJson));
        assert_eq!(parse(b""), Err(EventError::InvalidJson));
        assert_eq!(parse(b"{\"id\": \"evt_1\""), Err(EventError::InvalidJson));
        for body in [
            json!([1, 2]),
            json!({ "type": "x", "created": 1 }),
            json!({ "id": "evt_1", "type": "x", "created": "yesterday" }),
            json!({ "id": " ", "type": "x", "created": 1 }),
            json!({ "id": "evt_1", "type": "x", "created": i64::MAX }),
        ] {
            assert!(
                matches!(
                    parse(body.to_string().as_bytes()),
                    Err(EventError::InvalidEvent(_))
                ),
                "{body}"
            );
        }
    }
}
