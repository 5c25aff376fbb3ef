//! Plays Stripe against a running Folio: builds a sample event, signs it with `STRIPE_WEBHOOK_SECRET` the way
//! Stripe does, and posts it to the webhook, like `stripe trigger` but without a Stripe account.
//!
//! ```text
//! STRIPE_WEBHOOK_SECRET=whsec_local_dev cargo run --release        # in one terminal (or put it in .env)
//! cargo run --example send_webhook -- --user 1 --type checkout.session.completed
//! cargo run --example send_webhook -- --user 1 --type customer.subscription.updated --status past_due
//! cargo run --example send_webhook -- --user 1 --type customer.subscription.deleted
//! ```
//!
//! The secret is read from the environment or `.env` (never from the command line, where it would end up in
//! the shell history). With several comma-separated secrets, the event carries one `v1` per secret, as Stripe
//! sends while a rolled secret is still valid. Subscription events find the user by customer id; the default
//! customer, `cus_folio_<user>`, is the one the checkout event links.

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "Send a signed sample Stripe event to a running Folio")]
struct Args {
    /// The webhook URL.
    #[arg(
        long,
        env = "FOLIO_WEBHOOK_URL",
        default_value = "http://127.0.0.1:8000/api/webhooks/stripe"
    )]
    url: String,
    /// Event type: checkout.session.completed, customer.subscription.created|updated|deleted, or any other
    /// (sent with an empty object; Folio records and ignores it).
    #[arg(long = "type", default_value = "checkout.session.completed")]
    kind: String,
    /// The Folio user id (the checkout's `client_reference_id`); also names the default customer.
    #[arg(long)]
    user: Option<i64>,
    /// The Stripe customer id. Default: `cus_folio_<user>`.
    #[arg(long)]
    customer: Option<String>,
    /// Subscription status for customer.subscription.created/updated (active, trialing, past_due, canceled,
    /// unpaid, incomplete, incomplete_expired, paused).
    #[arg(long, default_value = "active")]
    status: String,
    /// The event id. Default: a new random one. Send the same id twice to see a replay answered `duplicate`.
    #[arg(long)]
    id: Option<String>,
    /// The event's `created` (unix seconds). Default: now. Send an older one to see it answered `stale`.
    #[arg(long)]
    created: Option<i64>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // A missing .env is normal; the secret may come from the environment.
    let _ = dotenvy::dotenv();
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("send_webhook: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let secrets = std::env::var("STRIPE_WEBHOOK_SECRET").unwrap_or_default();
    let secrets: Vec<&str> = secrets
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        bail!(
            "set STRIPE_WEBHOOK_SECRET (in the environment or .env) to the secret Folio runs with"
        );
    }

    let now = chrono::Utc::now().timestamp();
    let event = build_event(&args, now)?;
    let body = event.to_string();
    let signature = folio::billing::signature::sign(&secrets, now, body.as_bytes());

    folio::install_crypto_provider();
    let response = reqwest::Client::new()
        .post(&args.url)
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body)
        .send()
        .await
        .with_context(|| format!("could not reach {} (is Folio running?)", args.url))?;
    let status = response.status();
    let answer = response.text().await.unwrap_or_default();
    println!(
        "{} {} → {status} {answer}",
        event["type"].as_str().unwrap_or_default(),
        event["id"].as_str().unwrap_or_default()
    );
    if !status.is_success() {
        bail!("Folio refused the event");
    }
    Ok(())
}

/// A sample event of `args.kind` with the fields Folio reads, shaped like Stripe's.
fn build_event(args: &Args, now: i64) -> anyhow::Result<Value> {
    let customer = match (&args.customer, args.user) {
        (Some(customer), _) => customer.clone(),
        (None, Some(user)) => format!("cus_folio_{user}"),
        (None, None) => "cus_folio_local".to_owned(),
    };
    let random = || uuid::Uuid::new_v4().simple().to_string();
    let object = match args.kind.as_str() {
        "checkout.session.completed" => {
            let Some(user) = args.user else {
                bail!("checkout.session.completed needs --user (the Folio user id)");
            };
            json!({
                "id": format!("cs_test_{}", random()),
                "object": "checkout.session",
                "mode": "subscription",
                "client_reference_id": user.to_string(),
                "customer": customer,
                "subscription": format!("sub_{}", &random()[..14]),
                "payment_status": "paid",
                "status": "complete",
            })
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            let status = if args.kind.ends_with(".deleted") {
                "canceled"
            } else {
                args.status.as_str()
            };
            json!({
                "id": format!("sub_{}", &random()[..14]),
                "object": "subscription",
                "customer": customer,
                "status": status,
            })
        }
        _ => json!({}),
    };
    Ok(json!({
        "id": args.id.clone().unwrap_or_else(|| format!("evt_{}", random())),
        "object": "event",
        "api_version": "2024-06-20",
        "created": args.created.unwrap_or(now),
        "livemode": false,
        "pending_webhooks": 1,
        "type": args.kind,
        "data": { "object": object },
    }))
}
