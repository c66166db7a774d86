//! Middleware: layers around every handler, for what cuts across handlers. Three layers
//! here: timing (every queue), a tenant check and an idempotency filter (one queue).
//!
//! ```sh
//! cargo run --example middleware        # AMQP_ADDR overrides amqp://guest:guest@127.0.0.1:5672/%2f
//! ```

use eventrabbit::middleware::{BoxOutcome, Failure, Layers, Middleware, Next, Reply};
use eventrabbit::{
    Config, ConsumeChannel, MessageContext, PublishOptions, build_event_dependencies, consumer,
};
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many messages the layers finished (handled, skipped or refused): application state
/// that a layer reads from the context, so that the demo waits for them instead of sleeping.
struct Finished(watch::Sender<usize>);

/// Logs how long each handler took and how it ended.
struct Timing;

impl Middleware for Timing {
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
        Box::pin(async move {
            let started = Instant::now();
            let outcome = next.run().await;
            let how = match &outcome {
                Ok(_) => "ok".to_owned(),
                Err(f) => format!("{f:?}"),
            };
            println!(
                "timing: {} took {:?}: {how}",
                ctx.action(),
                started.elapsed()
            );
            if let Some(finished) = ctx.state::<Finished>() {
                finished.0.send_modify(|n| *n += 1);
            }
            outcome
        })
    }
}

/// Refuses, for good, messages that do not say which tenant they belong to.
struct RequireTenant;

impl Middleware for RequireTenant {
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
        Box::pin(async move {
            match ctx.header_str("tenant") {
                Some(_) => next.run().await,
                None => Err(Failure::Rejected("no `tenant` header".into())),
            }
        })
    }
}

/// Runs each message id once; a repeat is acknowledged without running the handler.
/// (In memory, for the example: a real service keeps the ids in its database, as the
/// inbox of `eventrabbit-postgres` does.)
#[derive(Default)]
struct Idempotent {
    seen: Mutex<HashSet<String>>,
}

impl Middleware for Idempotent {
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
        Box::pin(async move {
            let Some(id) = ctx.message_id() else {
                return next.run().await;
            };
            if self.seen.lock().unwrap().contains(id) {
                println!("idempotent: {id} seen before, skipped");
                return Ok(Reply::none());
            }
            let outcome = next.run().await;
            if outcome.is_ok() {
                self.seen.lock().unwrap().insert(id.to_owned());
            }
            outcome
        })
    }
}

#[consumer(action = "INVOICE_ISSUED")]
async fn on_invoice(ctx: MessageContext, invoice: u64) {
    println!(
        "handler: invoice {invoice} for tenant {}",
        ctx.header_str("tenant").unwrap_or_default()
    );
}

#[tokio::main]
async fn main() -> eventrabbit::Result<()> {
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let finished = Arc::new(Finished(watch::Sender::new(0)));
    let config = Config::default().with_state_arc(finished.clone());
    let (events, handle) = build_event_dependencies(&url, config).await?;
    handle.layer(Timing);
    let queue = "middleware_example_invoices";
    let layers = Layers::new()
        .with(RequireTenant)
        .with(Idempotent::default());
    // Consuming once `start_with` returns: what is published next reaches it.
    let consumer = handle
        .start_with(ConsumeChannel::new(queue).durable(false), layers)
        .await?;

    let with_tenant = PublishOptions::new()
        .message_id("invoice-1")
        .header("tenant", "acme");
    // The same invoice twice (the second is skipped), then one without a tenant
    // (dead-lettered to `middleware_example_invoices.dlq` as `rejected`).
    for _ in 0..2 {
        events
            .publish_with(
                "",
                queue,
                "INVOICE_ISSUED",
                &json!({"invoice": 1}),
                &with_tenant,
            )
            .await?;
    }
    events
        .publish("", queue, "INVOICE_ISSUED", &json!({"invoice": 2}))
        .await?;
    // The output shows the three deliveries finished before the shutdown.
    let mut done = finished.0.subscribe();
    let all_three = done.wait_for(|n| *n >= 3);
    if tokio::time::timeout(Duration::from_secs(10), all_three)
        .await
        .is_err()
    {
        println!("not every message was finished within 10 s");
    }
    handle.shutdown().await;
    consumer.join().await?;
    Ok(())
}
