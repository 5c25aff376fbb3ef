//! `POST /api/webhooks/stripe` end to end: signed deliveries change the plan a user sees in `me { plan }`; every
//! kind of bad delivery is a coded 400 that records nothing; rotation, the tolerance boundary, replays,
//! out-of-order and concurrent deliveries, a failure half-way, and an unconfigured server.
//!
//! Signatures here are made with `hmac`/`sha2` directly rather than with `folio::billing::signature::sign`, so a
//! mistake in Folio's signing code cannot cancel out the same mistake in its verification.

use chrono::Utc;
use folio::config::StripeConfig;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::{Fixture, TestApp, TestDb, test_config, token_for};

pub(crate) const SECRET: &str = "whsec_test_0123456789abcdefghijklmnop";
const MIB: usize = 1024 * 1024;

/// Hex HMAC-SHA256 of `"<t>.<body>"`, as Stripe computes a `v1`.
fn v1(secret: &str, t: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub(crate) fn signature(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

pub(crate) fn now() -> i64 {
    Utc::now().timestamp()
}

/// A Folio whose webhook accepts `secrets`.
pub(crate) async fn spawn_with_secrets(secrets: &[&str]) -> TestApp {
    let db = TestDb::create().await;
    let config = folio::Config {
        stripe: StripeConfig {
            webhook_secrets: secrets.iter().map(|s| (*s).into()).collect(),
            ..StripeConfig::default()
        },
        ..test_config(&db)
    };
    TestApp::spawn_with(db, config).await
}

/// Posts `body` with an optional `Stripe-Signature`; returns the status and the JSON body (asserting it is JSON).
async fn deliver(app: &TestApp, signature: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = app
        .client
        .post(format!("{}/api/webhooks/stripe", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        req = req.header("stripe-signature", signature);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.expect("body");
    assert!(
        content_type.starts_with("application/json"),
        "status {status}: a JSON answer, not {content_type:?}: {text}"
    );
    let json = serde_json::from_str(&text).expect("JSON body");
    (status, json)
}

/// Signs `event` with `SECRET` now and delivers it.
async fn send(app: &TestApp, event: &Value) -> (u16, Value) {
    let body = event.to_string();
    deliver(app, Some(&signature(SECRET, now(), &body)), &body).await
}

/// Delivers `event` and asserts 200 with `outcome`.
async fn expect_outcome(app: &TestApp, event: &Value, outcome: &str) {
    let (status, body) = send(app, event).await;
    assert_eq!(status, 200, "{} → {body}", event["id"]);
    assert_eq!(body["received"], true, "{body}");
    assert_eq!(body["outcome"], outcome, "{} → {body}", event["id"]);
}

fn checkout(id: &str, created: i64, user: i64, customer: &str) -> Value {
    json!({
        "id": id, "object": "event", "type": "checkout.session.completed", "created": created,
        "livemode": false, "api_version": "2024-06-20",
        "data": { "object": {
            "id": format!("cs_test_{id}"), "object": "checkout.session", "mode": "subscription",
            "client_reference_id": user.to_string(), "customer": customer,
            "payment_status": "paid", "status": "complete", "subscription": "sub_1"
        } }
    })
}

fn subscription(id: &str, kind: &str, created: i64, customer: &str, status: &str) -> Value {
    json!({
        "id": id, "object": "event", "type": format!("customer.subscription.{kind}"), "created": created,
        "livemode": false,
        "data": { "object": { "id": "sub_1", "object": "subscription", "customer": customer, "status": status } }
    })
}

/// The plan `user` sees for themself.
async fn plan(app: &TestApp, user: i64) -> String {
    let body = app
        .gql_as(Some(&token_for(user)), "{ me { plan } }", json!({}))
        .await;
    body["data"]["me"]["plan"]
        .as_str()
        .unwrap_or_else(|| panic!("no plan in {body}"))
        .to_owned()
}

async fn recorded(app: &TestApp) -> i64 {
    app.store.count_webhook_events().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_makes_the_user_pro_at_once_and_links_the_customer() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    assert_eq!(plan(&app, f.alice).await, "FREE");
    let t0 = now() - 3600;

    expect_outcome(
        &app,
        &checkout("evt_c1", t0, f.alice, "cus_alice"),
        "applied",
    )
    .await;
    assert_eq!(plan(&app, f.alice).await, "PRO");
    assert_eq!(plan(&app, f.bob).await, "FREE", "only the referenced user");
    // Others still do not see it; admins would.
    let seen_by_bob = app
        .gql_as(
            Some(&token_for(f.bob)),
            "query($id: ID!) { user(id: $id) { plan } }",
            json!({ "id": f.alice.to_string() }),
        )
        .await;
    assert_eq!(seen_by_bob["data"]["user"]["plan"], Value::Null);

    let row = app.store.webhook_event("evt_c1").await.unwrap().unwrap();
    assert_eq!(row.event_type, "checkout.session.completed");
    assert_eq!(row.created.timestamp(), t0);
    assert_eq!(row.outcome.as_deref(), Some("applied"));
    assert!(row.processed_at.is_some_and(|p| p >= row.received_at));
    assert_eq!(
        app.store
            .stripe_customer_of(f.alice)
            .await
            .unwrap()
            .as_deref(),
        Some("cus_alice")
    );

    // The link is what later subscription events find the user by.
    expect_outcome(
        &app,
        &subscription("evt_d1", "deleted", t0 + 60, "cus_alice", "canceled"),
        "applied",
    )
    .await;
    assert_eq!(plan(&app, f.alice).await, "FREE");
    assert_eq!(recorded(&app).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_statuses_drive_the_plan() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let t0 = now() - 3600;
    expect_outcome(&app, &checkout("evt_c", t0, f.alice, "cus_a"), "applied").await;
    let steps = [
        ("created", "incomplete", "unchanged", "PRO"),
        ("updated", "past_due", "applied", "FREE"),
        ("updated", "active", "applied", "PRO"),
        ("updated", "unpaid", "applied", "FREE"),
        ("updated", "trialing", "applied", "PRO"),
        ("updated", "canceled", "applied", "FREE"),
        ("updated", "incomplete", "unchanged", "FREE"),
        ("created", "active", "applied", "PRO"),
        ("updated", "incomplete_expired", "applied", "FREE"),
    ];
    for (i, (kind, status, outcome, expected)) in steps.into_iter().enumerate() {
        let id = format!("evt_s{i}");
        let event = subscription(&id, kind, t0 + 10 * (i as i64 + 1), "cus_a", status);
        expect_outcome(&app, &event, outcome).await;
        assert_eq!(plan(&app, f.alice).await, expected, "after {kind} {status}");
    }
    assert_eq!(recorded(&app).await, 1 + steps.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_checkout_links_the_customer_and_waits_for_the_subscription() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let t0 = now() - 3600;
    let mut event = checkout("evt_c", t0, f.alice, "cus_a");
    event["data"]["object"]["payment_status"] = json!("unpaid");
    expect_outcome(&app, &event, "unchanged").await;
    assert_eq!(plan(&app, f.alice).await, "FREE");
    let active = subscription("evt_s", "updated", t0 + 5, "cus_a", "active");
    expect_outcome(&app, &active, "applied").await;
    assert_eq!(plan(&app, f.alice).await, "PRO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deliveries_get_a_coded_400_and_record_nothing() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let event = checkout("evt_bad", now() - 60, f.alice, "cus_a").to_string();
    let t = now();
    let good_tag = v1(SECRET, t, &event);
    let oversized = format!("{event}{}", " ".repeat(MIB + 1 - event.len()));
    assert_eq!(oversized.len(), MIB + 1);
    let cases: Vec<(&str, Option<String>, String, &str)> = vec![
        ("no header", None, event.clone(), "MISSING_SIGNATURE"),
        (
            "empty header",
            Some(String::new()),
            event.clone(),
            "MISSING_SIGNATURE",
        ),
        (
            "garbage",
            Some("garbage".into()),
            event.clone(),
            "MALFORMED_SIGNATURE",
        ),
        (
            "no timestamp",
            Some(format!("v1={good_tag}")),
            event.clone(),
            "MALFORMED_SIGNATURE",
        ),
        (
            "timestamp not a number",
            Some(format!("t=now,v1={good_tag}")),
            event.clone(),
            "MALFORMED_SIGNATURE",
        ),
        (
            "bad hex",
            Some(format!("t={t},v1={}", "zz".repeat(32))),
            event.clone(),
            "MALFORMED_SIGNATURE",
        ),
        (
            "short hex",
            Some(format!("t={t},v1={}", &good_tag[..40])),
            event.clone(),
            "MALFORMED_SIGNATURE",
        ),
        (
            "only v0",
            Some(format!("t={t},v0={good_tag}")),
            event.clone(),
            "NO_V1_SIGNATURE",
        ),
        (
            "other secret",
            Some(signature("whsec_not_ours", t, &event)),
            event.clone(),
            "SIGNATURE_MISMATCH",
        ),
        (
            "tampered body",
            Some(signature(SECRET, t, &event)),
            event.replace("cus_a", "cus_b"),
            "SIGNATURE_MISMATCH",
        ),
        (
            "other timestamp",
            Some(format!("t={},v1={good_tag}", t - 1)),
            event.clone(),
            "SIGNATURE_MISMATCH",
        ),
        (
            "stale",
            Some(signature(SECRET, t - 301, &event)),
            event.clone(),
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        // +302: the server reads its clock after this test did, which can shorten the lead by one second.
        (
            "future",
            Some(signature(SECRET, t + 302, &event)),
            event.clone(),
            "TIMESTAMP_OUT_OF_TOLERANCE",
        ),
        (
            "not JSON",
            Some(signature(SECRET, t, "not json")),
            "not json".into(),
            "INVALID_JSON",
        ),
        (
            "empty body",
            Some(signature(SECRET, t, "")),
            String::new(),
            "INVALID_JSON",
        ),
        (
            "not an event",
            Some(signature(SECRET, t, "{\"hello\":1}")),
            "{\"hello\":1}".into(),
            "INVALID_EVENT",
        ),
        (
            "over 1 MiB",
            Some(signature(SECRET, t, &oversized)),
            oversized.clone(),
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (name, header, body, code) in &cases {
        let (status, answer) = deliver(&app, header.as_deref(), body).await;
        assert_eq!(status, 400, "{name}: {answer}");
        assert_eq!(answer["error"]["code"], *code, "{name}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {answer}"
        );
        assert!(
            !answer.to_string().contains(SECRET),
            "{name}: never echo the secret"
        );
    }
    assert_eq!(recorded(&app).await, 0, "nothing recorded");
    assert_eq!(plan(&app, f.alice).await, "FREE", "nothing processed");
    // The same event, correctly signed, goes through: the refusals above were about the delivery only.
    let (status, answer) = deliver(&app, Some(&signature(SECRET, now(), &event)), &event).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("applied")),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_exactly_one_mebibyte_is_accepted() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let mut event = checkout("evt_big", now() - 60, f.alice, "cus_a");
    event["data"]["object"]["metadata"] = json!({ "padding": "" });
    let padding = MIB - event.to_string().len();
    event["data"]["object"]["metadata"]["padding"] = json!("x".repeat(padding));
    assert_eq!(event.to_string().len(), MIB);
    expect_outcome(&app, &event, "applied").await;
    assert_eq!(plan(&app, f.alice).await, "PRO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_v1_matches_after_a_secret_is_rolled() {
    let event = |id: &str| json!({ "id": id, "type": "invoice.paid", "created": now(), "data": { "object": {} } });

    // Folio already runs with the new secret; Stripe still sends the old secret's v1 first.
    let app = spawn_with_secrets(&["whsec_new"]).await;
    let body = event("evt_r1").to_string();
    let t = now();
    let header = format!(
        "t={t},v1={},v1={}",
        v1("whsec_old", t, &body),
        v1("whsec_new", t, &body)
    );
    let (status, answer) = deliver(&app, Some(&header), &body).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("ignored")),
        "{answer}"
    );
    let only_old = signature("whsec_old", t, &body);
    let (status, answer) = deliver(&app, Some(&only_old), &body).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("SIGNATURE_MISMATCH"))
    );

    // Folio holds both during the overlap; either one signs.
    let app = spawn_with_secrets(&["whsec_old", "whsec_new"]).await;
    for (i, secret) in ["whsec_new", "whsec_old"].into_iter().enumerate() {
        let body = event(&format!("evt_r2_{i}")).to_string();
        let (status, answer) = deliver(&app, Some(&signature(secret, now(), &body)), &body).await;
        assert_eq!(status, 200, "signed with {secret}: {answer}");
    }
    let body = event("evt_r3").to_string();
    let (status, answer) =
        deliver(&app, Some(&signature("whsec_third", now(), &body)), &body).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &json!("SIGNATURE_MISMATCH"))
    );
    assert_eq!(recorded(&app).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tolerance_is_300_seconds_on_both_sides() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    // The exact ±300 s boundaries are unit-tested with a fixed clock (billing::signature); over HTTP the two
    // clocks are read a moment apart, so these stay one second (two ahead) clear of the edge.
    let cases = [(-299, 200), (299, 200), (-301, 400), (302, 400)];
    for (i, (offset, expected)) in cases.into_iter().enumerate() {
        let body = checkout(&format!("evt_t{i}"), now() - 60, f.alice, "cus_a").to_string();
        let t = now() + offset;
        let (status, answer) = deliver(&app, Some(&signature(SECRET, t, &body)), &body).await;
        assert_eq!(status, expected, "t = now {offset:+}: {answer}");
        if expected == 400 {
            assert_eq!(answer["error"]["code"], "TIMESTAMP_OUT_OF_TOLERANCE");
        }
    }
    assert_eq!(recorded(&app).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_event_has_a_single_effect() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let t0 = now() - 3600;
    expect_outcome(&app, &checkout("evt_c", t0, f.alice, "cus_a"), "applied").await;
    // Two events in the same second: the later delivery wins...
    let active = subscription("evt_a", "updated", t0 + 10, "cus_a", "active").to_string();
    let active_signature = signature(SECRET, now(), &active);
    let (status, _) = deliver(&app, Some(&active_signature), &active).await;
    assert_eq!(status, 200);
    let canceled = subscription("evt_b", "updated", t0 + 10, "cus_a", "canceled");
    expect_outcome(&app, &canceled, "applied").await;
    assert_eq!(plan(&app, f.alice).await, "FREE");
    // ...so applying `evt_a` a second time would make Alice PRO again. Replays, byte for byte and re-signed:
    for _ in 0..2 {
        let (status, answer) = deliver(&app, Some(&active_signature), &active).await;
        assert_eq!(
            (status, &answer["outcome"]),
            (200, &json!("duplicate")),
            "{answer}"
        );
    }
    let resigned = signature(SECRET, now(), &active);
    let (status, answer) = deliver(&app, Some(&resigned), &active).await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("duplicate")),
        "{answer}"
    );
    assert_eq!(plan(&app, f.alice).await, "FREE");
    assert_eq!(recorded(&app).await, 3);
    let row = app.store.webhook_event("evt_a").await.unwrap().unwrap();
    assert_eq!(
        row.outcome.as_deref(),
        Some("applied"),
        "the record keeps the first outcome"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_updates_keep_the_newest_state() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let t0 = now() - 3600;
    expect_outcome(&app, &checkout("evt_c", t0, f.alice, "cus_a"), "applied").await;
    let steps = [
        // (id, kind, created offset, status, outcome, plan after)
        ("evt_1", "updated", 20, "canceled", "applied", "FREE"),
        ("evt_2", "updated", 10, "active", "stale", "FREE"),
        ("evt_3", "created", 1, "trialing", "stale", "FREE"),
        ("evt_4", "updated", 30, "active", "applied", "PRO"),
        ("evt_5", "updated", 25, "past_due", "stale", "PRO"),
        ("evt_6", "deleted", 29, "canceled", "stale", "PRO"),
        ("evt_7", "deleted", 40, "canceled", "applied", "FREE"),
    ];
    for (id, kind, offset, status, outcome, expected) in steps {
        expect_outcome(
            &app,
            &subscription(id, kind, t0 + offset, "cus_a", status),
            outcome,
        )
        .await;
        assert_eq!(plan(&app, f.alice).await, expected, "after {id}");
    }
    // A late checkout (another session, older than the cancellation) does not bring PRO back either.
    expect_outcome(
        &app,
        &checkout("evt_c2", t0 + 35, f.alice, "cus_a"),
        "stale",
    )
    .await;
    assert_eq!(plan(&app, f.alice).await, "FREE");
    assert_eq!(recorded(&app).await, 9, "stale events are recorded too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_while_processing_writes_nothing_and_stripe_may_retry() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let t0 = now() - 3600;
    expect_outcome(
        &app,
        &checkout("evt_bob", t0, f.bob, "cus_shared"),
        "applied",
    )
    .await;
    // Alice's checkout names a customer already linked to Bob: the unique index refuses the write after the
    // event was claimed, inside the transaction.
    let alice = checkout("evt_alice", t0 + 1, f.alice, "cus_shared");
    for attempt in 0..2 {
        let (status, answer) = send(&app, &alice).await;
        assert_eq!(status, 500, "attempt {attempt}: {answer}");
        assert_eq!(answer["error"]["code"], "INTERNAL_SERVER_ERROR");
        assert!(
            !answer.to_string().contains("cus_shared"),
            "details stay in the log: {answer}"
        );
    }
    assert!(
        app.store
            .webhook_event("evt_alice")
            .await
            .unwrap()
            .is_none(),
        "the claim was rolled back, so the retry above was processed again, not taken for a duplicate"
    );
    assert_eq!(recorded(&app).await, 1);
    assert_eq!(plan(&app, f.alice).await, "FREE");
    assert_eq!(app.store.stripe_customer_of(f.alice).await.unwrap(), None);
    assert_eq!(plan(&app, f.bob).await, "PRO");
    assert_eq!(
        app.store
            .stripe_customer_of(f.bob)
            .await
            .unwrap()
            .as_deref(),
        Some("cus_shared")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deliveries_of_one_event_have_one_effect() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let body = checkout("evt_once", now() - 60, f.alice, "cus_a").to_string();
    let header = signature(SECRET, now(), &body);
    let answers =
        futures_util::future::join_all((0..8).map(|_| deliver(&app, Some(&header), &body))).await;
    let mut outcomes: Vec<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 200, "{answer}");
            answer["outcome"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    outcomes.sort();
    let mut expected = vec!["applied".to_owned()];
    expected.extend(std::iter::repeat_n("duplicate".to_owned(), 7));
    assert_eq!(outcomes, expected);
    assert_eq!(recorded(&app).await, 1);
    assert_eq!(plan(&app, f.alice).await, "PRO");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_no_folio_user_and_other_types_are_recorded_and_ignored() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let f = Fixture::create(&app.store).await;
    let t0 = now() - 3600;
    expect_outcome(
        &app,
        &checkout("evt_1", t0, 999_999, "cus_x"),
        "unknown_user",
    )
    .await;
    let mut no_reference = checkout("evt_2", t0, f.alice, "cus_y");
    no_reference["data"]["object"]["client_reference_id"] = Value::Null;
    expect_outcome(&app, &no_reference, "ignored").await;
    let unknown = subscription("evt_3", "updated", t0, "cus_nobody", "active");
    expect_outcome(&app, &unknown, "unknown_customer").await;
    let other = json!({ "id": "evt_4", "type": "invoice.paid", "created": t0, "data": { "object": { "customer": "cus_x" } } });
    expect_outcome(&app, &other, "ignored").await;
    assert_eq!(recorded(&app).await, 4);
    for user in [f.alice, f.bob, f.carol] {
        assert_eq!(plan(&app, user).await, "FREE");
    }
    // Recorded means a redelivery is a no-op too.
    expect_outcome(&app, &unknown, "duplicate").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_webhook_answers_503() {
    let app = TestApp::spawn().await;
    let f = Fixture::create(&app.store).await;
    let body = checkout("evt_1", now(), f.alice, "cus_a").to_string();
    for header in [Some(signature(SECRET, now(), &body)), None] {
        let (status, answer) = deliver(&app, header.as_deref(), &body).await;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "WEBHOOK_NOT_CONFIGURED");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not configured")),
            "{answer}"
        );
    }
    assert_eq!(recorded(&app).await, 0);
    assert_eq!(plan(&app, f.alice).await, "FREE");
}

/// Every order of three deliveries: `apply` applies events in the order given.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 1 {
        return vec![vec![0]];
    }
    let mut all = Vec::new();
    for rest in permutations(n - 1) {
        for at in 0..=rest.len() {
            let mut order = rest.clone();
            order.insert(at, n - 1);
            all.push(order);
        }
    }
    all
}

/// Stripe does not promise order: subscription events may arrive before the checkout that links their customer.
/// Delivered in every order, the user ends on the plan of the newest event, each event applied once; a second
/// delivery of everything changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_events_before_their_checkout_are_applied_once_it_links_the_customer() {
    let app = spawn_with_secrets(&[SECRET]).await;
    let t0 = now() - 3600;
    // (events as (kind, created offset, status), the plan the newest event decides)
    type Delivery = (&'static str, i64, &'static str);
    let scenarios: [(&[Delivery], &str); 3] = [
        (
            &[
                ("checkout", 0, ""),
                ("created", 10, "active"),
                ("deleted", 20, "canceled"),
            ],
            "FREE",
        ),
        (
            &[
                ("checkout", 0, ""),
                ("updated", 10, "past_due"),
                ("updated", 20, "active"),
            ],
            "PRO",
        ),
        (
            &[
                ("created", 0, "incomplete"),
                ("checkout", 10, ""),
                ("updated", 20, "active"),
            ],
            "PRO",
        ),
    ];
    let mut n = 0;
    for (s, (events, expected)) in scenarios.iter().enumerate() {
        for order in permutations(events.len()) {
            n += 1;
            let user = app
                .store
                .create_account(&folio::store::CreateAccount {
                    email: folio::domain::Email::parse(format!("payer{n}@example.com")).unwrap(),
                    name: folio::domain::DisplayName::parse("Payer".into()).unwrap(),
                    password_hash: "x".into(),
                })
                .await
                .unwrap()
                .id;
            let customer = format!("cus_order_{n}");
            let bodies: Vec<Value> = events
                .iter()
                .enumerate()
                .map(|(i, (kind, offset, status))| {
                    let id = format!("evt_s{s}_{n}_{i}");
                    if *kind == "checkout" {
                        checkout(&id, t0 + offset, user, &customer)
                    } else {
                        subscription(&id, kind, t0 + offset, &customer, status)
                    }
                })
                .collect();
            for &i in &order {
                let (status, body) = send(&app, &bodies[i]).await;
                assert_eq!(status, 200, "{body}");
            }
            assert_eq!(
                plan(&app, user).await,
                *expected,
                "scenario {s}, delivery order {order:?}"
            );
            for body in &bodies {
                expect_outcome(&app, body, "duplicate").await;
            }
            assert_eq!(plan(&app, user).await, *expected, "after redelivery");
            // Every event was processed: none is left waiting for its customer.
            for body in &bodies {
                let row = app
                    .store
                    .webhook_event(body["id"].as_str().unwrap())
                    .await
                    .unwrap()
                    .expect("recorded");
                assert_ne!(
                    row.outcome.as_deref(),
                    Some("unknown_customer"),
                    "scenario {s}, order {order:?}: {} still waits",
                    body["id"]
                );
            }
        }
    }
}
