-- Billing through Stripe webhooks (issue 5).
--
-- Every verified Stripe event is recorded here, in the same transaction as its effect: the unique event id is
-- what makes a redelivered or concurrently delivered event a no-op. `processed_at` and `outcome` are filled
-- before that transaction commits, so a committed row always has them.
CREATE TABLE webhook_events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    stripe_event_id TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    -- The event's own `created` time (when Stripe created it), not when it reached Folio.
    created         TEXT    NOT NULL,
    received_at     TEXT    NOT NULL,
    processed_at    TEXT,
    -- What processing did: applied, unchanged, stale, unknown_user, unknown_customer, ignored.
    outcome         TEXT
);
CREATE UNIQUE INDEX webhook_events_stripe_event_id_key ON webhook_events (stripe_event_id);

-- The Stripe customer a user paid as, linked by `checkout.session.completed`; subscription events find the user
-- by it. UNIQUE ignores NULLs.
ALTER TABLE users ADD COLUMN stripe_customer_id TEXT;
CREATE UNIQUE INDEX users_stripe_customer_id_key ON users (stripe_customer_id);
-- The `created` time of the Stripe event that last decided this user's plan. An event older than this never
-- changes the plan, so deliveries arriving out of order cannot bring back an outdated state.
ALTER TABLE users ADD COLUMN plan_event_created_at TEXT;
