//! Billing: recording Stripe events and applying their effect on users' plans, in one transaction.
//!
//! The event id is claimed first (`INSERT ... ON CONFLICT DO NOTHING RETURNING`): whoever inserts the row applies
//! the effect; a redelivery, or a concurrent delivery that finds the row, does nothing. On PostgreSQL a
//! concurrent claim waits for the first transaction on the unique index and then sees its row (or, if that one
//! rolled back, claims the id itself); on SQLite the `BEGIN IMMEDIATE` transactions run one at a time. A failure
//! anywhere rolls back the claim with the effect, so Stripe's retry is processed from scratch.
//!
//! Order: a user remembers the `created` time of the event that last decided their plan, read under a row lock
//! (`FOR UPDATE` on PostgreSQL; SQLite's write lock is already held) and compared inside the transaction. An
//! older event never changes the plan. Events created in the same second are applied in arrival order (Stripe's
//! timestamps have one-second resolution, so nothing finer exists to order them by).
//!
//! Early subscription events: one whose customer no user is linked to yet is kept waiting (outcome
//! `unknown_customer`, with its customer and plan). The checkout that links that customer applies every waiting
//! event, oldest first, through the same ordering rule, and records each one's real outcome, so each is applied
//! exactly once. On PostgreSQL both paths take a transaction-scoped advisory lock on the customer id first, so a
//! subscription event and the checkout for its customer never pass each other unseen.

use chrono::{DateTime, Utc};

use super::users::Plan;
use super::{Db, Store, is_unique_violation, with_pool, with_tx};
use crate::error::AppError;

/// A verified Stripe event reduced to what the store acts on (built by `billing::event`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillingEvent {
    /// Stripe's event id (`evt_...`), unique per event and repeated on every redelivery.
    pub stripe_event_id: String,
    /// Stripe's event type (`checkout.session.completed`, ...), recorded as sent.
    pub event_type: String,
    /// When Stripe created the event (whole seconds): the order in which events take effect.
    pub created: DateTime<Utc>,
    pub action: BillingAction,
}

/// What an event asks of Folio.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BillingAction {
    /// A checkout completed for Folio user `user_id`: link the Stripe customer (if the session has one) and set
    /// `plan` (`None` when the session is not paid yet, so only the link is made).
    Checkout {
        user_id: i64,
        customer: Option<String>,
        plan: Option<Plan>,
    },
    /// The subscription of the user linked to `customer` is in a state that means `plan`; `None` for states that
    /// decide nothing (`incomplete`, statuses Folio does not know).
    Subscription {
        customer: String,
        plan: Option<Plan>,
    },
    /// Recorded, nothing else: an event type Folio does not handle, or one that names no Folio user.
    Ignore(IgnoreReason),
}

/// Why an event is only recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IgnoreReason {
    /// A type Folio does not subscribe to (or not yet).
    UnhandledType,
    /// A checkout session without a `client_reference_id` that is a Folio user id (e.g. a payment link).
    NoUserReference,
    /// A subscription event without a customer id.
    NoCustomer,
}

impl IgnoreReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnhandledType => "event type not handled",
            Self::NoUserReference => {
                "checkout session without a Folio user id in client_reference_id"
            }
            Self::NoCustomer => "subscription event without a customer",
        }
    }
}

/// What processing an event did; stored with the event (`as_str`) and returned to the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// The event id was recorded before: nothing was done this time.
    Duplicate,
    /// The event decided the user's plan; `changed` when it differs from the plan before.
    Applied {
        user_id: i64,
        plan: Plan,
        changed: bool,
    },
    /// The user was found but the event decides no plan (a customer id may have been linked).
    Unchanged { user_id: i64 },
    /// Older than the event that last decided this user's plan, which therefore stays.
    Stale { user_id: i64 },
    /// A checkout for a user id that does not exist.
    UnknownUser,
    /// A subscription event for a customer no Folio user is linked to.
    UnknownCustomer,
    /// See `IgnoreReason`.
    Ignored,
}

impl EventOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Applied { .. } => "applied",
            Self::Unchanged { .. } => "unchanged",
            Self::Stale { .. } => "stale",
            Self::UnknownUser => "unknown_user",
            Self::UnknownCustomer => "unknown_customer",
            Self::Ignored => "ignored",
        }
    }

    /// The user whose plan this event changed, if any: whose cached responses are now out of date.
    pub fn plan_changed_for(self) -> Option<(i64, Plan)> {
        match self {
            Self::Applied {
                user_id,
                plan,
                changed: true,
            } => Some((user_id, plan)),
            _ => None,
        }
    }
}

/// A recorded event, as stored.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookEventRow {
    pub stripe_event_id: String,
    pub event_type: String,
    pub created: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub processed_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// A user's billing columns, read under a lock before deciding.
#[derive(Clone, Debug, sqlx::FromRow)]
struct BillingState {
    id: i64,
    #[sqlx(try_from = "String")]
    plan: Plan,
    stripe_customer_id: Option<String>,
    plan_event_created_at: Option<DateTime<Utc>>,
}

/// The billing columns after an event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NextState {
    plan: Plan,
    stripe_customer_id: Option<String>,
    plan_event_created_at: Option<DateTime<Utc>>,
}

/// Decides what an event created at `created` does to `current`.
///
/// The plan moves only when the event is not older than the one that last decided it. A customer link is set
/// when the user has none (even from an older event: later subscription events need it to find the user), or
/// replaced by an event that is not older.
fn decide(
    current: &BillingState,
    created: DateTime<Utc>,
    customer: Option<&str>,
    plan: Option<Plan>,
) -> (NextState, EventOutcome) {
    let fresh = current
        .plan_event_created_at
        .is_none_or(|last| last <= created);
    let mut next = NextState {
        plan: current.plan,
        stripe_customer_id: current.stripe_customer_id.clone(),
        plan_event_created_at: current.plan_event_created_at,
    };
    if let Some(customer) = customer
        && (fresh || next.stripe_customer_id.is_none())
    {
        next.stripe_customer_id = Some(customer.to_owned());
    }
    let user_id = current.id;
    let outcome = match plan {
        Some(_) if !fresh => EventOutcome::Stale { user_id },
        Some(plan) => {
            next.plan = plan;
            next.plan_event_created_at = Some(created);
            EventOutcome::Applied {
                user_id,
                plan,
                changed: plan != current.plan,
            }
        }
        None => EventOutcome::Unchanged { user_id },
    };
    (next, outcome)
}

macro_rules! billing_cols {
    () => {
        "SELECT id, plan, stripe_customer_id, plan_event_created_at FROM users"
    };
}

impl Store {
    /// Records `event` and applies its effect in one transaction; a known event id → `Duplicate`, nothing done.
    ///
    /// Errors roll everything back, the event record included. A customer id already linked to another user is
    /// such an error (`INTERNAL_SERVER_ERROR`, logged with the customer id): it needs a person to look, and
    /// until then Stripe's retries keep the event from being lost.
    pub async fn apply_stripe_event(
        &self,
        event: &BillingEvent,
        received_at: DateTime<Utc>,
    ) -> Result<EventOutcome, AppError> {
        const CLAIM: &str = "INSERT INTO webhook_events \
             (stripe_event_id, event_type, created, received_at, customer, plan) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stripe_event_id) DO NOTHING RETURNING id";
        const LOCK_CUSTOMER_PG: &str = "SELECT pg_advisory_xact_lock(hashtext($1))";
        const WAITING: &str = "SELECT id, created, plan FROM webhook_events \
             WHERE customer = $1 AND outcome = 'unknown_customer' ORDER BY created, id";
        const BY_ID_PG: &str = concat!(billing_cols!(), " WHERE id = $1 FOR UPDATE");
        const BY_ID_LITE: &str = concat!(billing_cols!(), " WHERE id = $1");
        const BY_CUSTOMER_PG: &str =
            concat!(billing_cols!(), " WHERE stripe_customer_id = $1 FOR UPDATE");
        const BY_CUSTOMER_LITE: &str = concat!(billing_cols!(), " WHERE stripe_customer_id = $1");
        const WRITE: &str = "UPDATE users SET plan = $2, stripe_customer_id = $3, \
             plan_event_created_at = $4, updated_at = $5 WHERE id = $1";
        const FINISH: &str =
            "UPDATE webhook_events SET processed_at = $2, outcome = $3 WHERE id = $1";
        let pg = matches!(self.db, Db::Postgres(_));
        // What a subscription event asks, kept with it in case it has to wait for its customer's checkout.
        let (asks_customer, asks_plan) = match &event.action {
            BillingAction::Subscription { customer, plan } => {
                (Some(customer.as_str()), plan.map(Plan::as_str))
            }
            _ => (None, None),
        };
        let locks_customer = match &event.action {
            BillingAction::Subscription { customer, .. } => Some(customer.as_str()),
            BillingAction::Checkout { customer, .. } => customer.as_deref(),
            BillingAction::Ignore(_) => None,
        };
        let outcome = with_tx!(self, tx => {
            self.count(1);
            let claimed: Option<i64> = sqlx::query_scalar(CLAIM)
                .bind(&event.stripe_event_id)
                .bind(&event.event_type)
                .bind(event.created)
                .bind(received_at)
                .bind(asks_customer)
                .bind(asks_plan)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(record_id) = claimed else {
                // Dropping the transaction rolls back nothing: it wrote nothing.
                return Ok(EventOutcome::Duplicate);
            };
            if let (true, Some(customer)) = (pg, locks_customer) {
                self.count(1);
                sqlx::query(LOCK_CUSTOMER_PG).bind(customer).execute(&mut *tx).await?;
            }
            let target = match &event.action {
                BillingAction::Ignore(_) => None,
                BillingAction::Checkout { user_id, customer, plan } => Some((
                    sqlx::query_as::<_, BillingState>(if pg { BY_ID_PG } else { BY_ID_LITE })
                        .bind(*user_id),
                    customer.as_deref(),
                    *plan,
                    EventOutcome::UnknownUser,
                )),
                BillingAction::Subscription { customer, plan } => Some((
                    sqlx::query_as::<_, BillingState>(if pg { BY_CUSTOMER_PG } else { BY_CUSTOMER_LITE })
                        .bind(customer.as_str()),
                    None,
                    *plan,
                    EventOutcome::UnknownCustomer,
                )),
            };
            let outcome = match target {
                None => EventOutcome::Ignored,
                Some((lookup, customer, plan, missing)) => {
                    self.count(1);
                    match lookup.fetch_optional(&mut *tx).await? {
                        None => missing,
                        Some(current) => {
                            let (mut next, mut outcome) = decide(&current, event.created, customer, plan);
                            // A checkout that links a customer applies the subscription events that came first.
                            if let (BillingAction::Checkout { .. }, Some(linked)) =
                                (&event.action, next.stripe_customer_id.clone())
                            {
                                self.count(1);
                                let waiting: Vec<(i64, DateTime<Utc>, Option<String>)> = sqlx::query_as(WAITING)
                                    .bind(&linked)
                                    .fetch_all(&mut *tx)
                                    .await?;
                                for (waiting_id, created, plan) in waiting {
                                    let state = BillingState {
                                        id: current.id,
                                        plan: next.plan,
                                        stripe_customer_id: next.stripe_customer_id.clone(),
                                        plan_event_created_at: next.plan_event_created_at,
                                    };
                                    let plan = plan.and_then(|p| Plan::try_from(p).ok());
                                    let (after, late) = decide(&state, created, None, plan);
                                    next = after;
                                    self.count(1);
                                    sqlx::query(FINISH)
                                        .bind(waiting_id)
                                        .bind(Utc::now())
                                        .bind(late.as_str())
                                        .execute(&mut *tx)
                                        .await?;
                                }
                                if next.plan != current.plan {
                                    outcome = EventOutcome::Applied {
                                        user_id: current.id,
                                        plan: next.plan,
                                        changed: true,
                                    };
                                }
                            }
                            let unchanged = next.plan == current.plan
                                && next.stripe_customer_id == current.stripe_customer_id
                                && next.plan_event_created_at == current.plan_event_created_at;
                            if !unchanged {
                                self.count(1);
                                sqlx::query(WRITE)
                                    .bind(current.id)
                                    .bind(next.plan.as_str())
                                    .bind(next.stripe_customer_id.as_deref())
                                    .bind(next.plan_event_created_at)
                                    .bind(Utc::now())
                                    .execute(&mut *tx)
                                    .await
                                    .map_err(|err| customer_taken(err, next.stripe_customer_id.as_deref()))?;
                            }
                            outcome
                        }
                    }
                }
            };
            self.count(1);
            sqlx::query(FINISH)
                .bind(record_id)
                .bind(Utc::now())
                .bind(outcome.as_str())
                .execute(&mut *tx)
                .await?;
            outcome
        });
        Ok(outcome)
    }

    /// How many Stripe events are recorded (for tests and operators).
    pub async fn count_webhook_events(&self) -> Result<i64, AppError> {
        self.count(1);
        with_pool!(self, pool => sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events")
            .fetch_one(pool)
            .await)
    }

    /// A recorded Stripe event by its Stripe id.
    pub async fn webhook_event(
        &self,
        stripe_event_id: &str,
    ) -> Result<Option<WebhookEventRow>, AppError> {
        self.count(1);
        const SQL: &str = "SELECT stripe_event_id, event_type, created, received_at, processed_at, outcome \
             FROM webhook_events WHERE stripe_event_id = $1";
        with_pool!(self, pool => sqlx::query_as(SQL)
            .bind(stripe_event_id)
            .fetch_optional(pool)
            .await)
    }

    /// The Stripe customer linked to a user, if any.
    pub async fn stripe_customer_of(&self, user_id: i64) -> Result<Option<String>, AppError> {
        self.count(1);
        let found: Option<Option<String>> = with_pool!(self, pool => sqlx::query_scalar(
            "SELECT stripe_customer_id FROM users WHERE id = $1"
        )
        .bind(user_id)
        .fetch_optional(pool)
        .await)?;
        Ok(found.flatten())
    }
}

/// A customer id already linked to another user fails the unique index: say which one in the (internal) error.
fn customer_taken(err: sqlx::Error, customer: Option<&str>) -> AppError {
    if is_unique_violation(&err) {
        AppError::internal(anyhow::Error::new(err).context(format!(
            "Stripe customer {} is already linked to another Folio user",
            customer.unwrap_or("?")
        )))
    } else {
        err.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap()
    }

    fn state(plan: Plan, customer: Option<&str>, last: Option<i64>) -> BillingState {
        BillingState {
            id: 7,
            plan,
            stripe_customer_id: customer.map(str::to_owned),
            plan_event_created_at: last.map(at),
        }
    }

    #[test]
    fn newer_or_equal_events_decide_the_plan() {
        let (next, outcome) = decide(
            &state(Plan::Free, None, None),
            at(10),
            Some("cus_1"),
            Some(Plan::Pro),
        );
        assert_eq!(
            outcome,
            EventOutcome::Applied {
                user_id: 7,
                plan: Plan::Pro,
                changed: true
            }
        );
        assert_eq!(next.stripe_customer_id.as_deref(), Some("cus_1"));
        assert_eq!(next.plan_event_created_at, Some(at(10)));
        // Same second: applied in arrival order.
        let (next, outcome) = decide(
            &state(Plan::Pro, Some("cus_1"), Some(10)),
            at(10),
            None,
            Some(Plan::Free),
        );
        assert_eq!(next.plan, Plan::Free);
        assert_eq!(outcome.plan_changed_for(), Some((7, Plan::Free)));
    }

    #[test]
    fn older_events_leave_the_plan_but_may_link_a_missing_customer() {
        let (next, outcome) = decide(
            &state(Plan::Free, None, Some(20)),
            at(10),
            Some("cus_1"),
            Some(Plan::Pro),
        );
        assert_eq!(outcome, EventOutcome::Stale { user_id: 7 });
        assert_eq!(next.plan, Plan::Free);
        assert_eq!(next.plan_event_created_at, Some(at(20)));
        assert_eq!(next.stripe_customer_id.as_deref(), Some("cus_1"));
        // An existing link is not replaced by an older event.
        let (next, _) = decide(
            &state(Plan::Free, Some("cus_new"), Some(20)),
            at(10),
            Some("cus_old"),
            Some(Plan::Pro),
        );
        assert_eq!(next.stripe_customer_id.as_deref(), Some("cus_new"));
    }

    #[test]
    fn undecided_states_change_nothing_and_keep_the_order_mark() {
        let current = state(Plan::Pro, Some("cus_1"), Some(20));
        let (next, outcome) = decide(&current, at(30), None, None);
        assert_eq!(outcome, EventOutcome::Unchanged { user_id: 7 });
        assert_eq!(next.plan_event_created_at, Some(at(20)));
        assert_eq!(outcome.plan_changed_for(), None);
    }
}
