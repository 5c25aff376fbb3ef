-- Stripe does not promise delivery order: a subscription event can arrive before the checkout that links its
-- customer to a user. Such an event is kept with what it asks (`customer`, `plan`; outcome `unknown_customer`)
-- and applied, in event order and exactly once, by the checkout that links the customer.
ALTER TABLE webhook_events ADD COLUMN customer TEXT;
ALTER TABLE webhook_events ADD COLUMN plan TEXT;
CREATE INDEX webhook_events_waiting ON webhook_events (customer) WHERE outcome = 'unknown_customer';
