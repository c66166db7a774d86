//! The consumer runner: one loop per queue, one task per delivery, settled by outcome.

use crate::ack::{self, Acks, Settle};
use crate::consume_channel::{ConsumeChannel, Resolved};
use crate::context::Message;
use crate::dead_letter;
use crate::dispatch::{DeadReason, Decision, decide};
use crate::envelope;
use crate::handler::{Failure, Input, Registration, Reply};
use crate::publisher::{Outgoing, Publisher, properties};
use crate::registry::{self, Routes};
use crate::runtime::Shared;
use crate::topology;
use crate::{Error, Result};
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::{FieldTable, ShortString};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// What each delivery task of one queue shares.
struct QueueContext {
    queue: Arc<str>,
    routes: Routes,
    settings: Resolved,
    shared: Arc<Shared>,
}

/// Runs `spec` until shutdown, reconnecting when the connection drops.
pub(crate) async fn run(shared: Arc<Shared>, spec: ConsumeChannel) -> Result<()> {
    let routes = registry::routes(&spec.queue, spec.actions.as_deref())?;
    let settings = spec.resolve(&shared.config.queue, &shared.config.retry);
    let ctx = Arc::new(QueueContext {
        queue: spec.queue.as_str().into(),
        routes,
        settings,
        shared: shared.clone(),
    });
    let _running = shared.consumer_started();
    let tracker = TaskTracker::new();
    let mut failures = 0u32;
    let result = loop {
        match session(&ctx, &spec, &tracker).await {
            Ok(()) => break Ok(()),
            Err(_) if shared.shutdown.is_cancelled() => break Ok(()),
            Err(e) if is_fatal(&e) => break Err(e),
            Err(e) => {
                failures += 1;
                let delay = Duration::from_millis(100 * 2u64.pow(failures.min(7)))
                    .min(shared.config.max_reconnect_delay);
                tracing::warn!(queue = %spec.queue, error = %e, ?delay, "consumer interrupted, resuming");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutdown.cancelled() => break Ok(()),
                }
            }
        }
    };
    tracker.close();
    tracker.wait().await;
    result
}

/// Errors that reconnecting cannot fix: the topology is refused by the broker.
fn is_fatal(e: &Error) -> bool {
    match e {
        Error::Amqp { source, .. } => {
            source.is_amqp_soft_error() || source.is_amqp_hard_error() && !source.can_be_recovered()
        }
        Error::UnknownAction { .. } | Error::DuplicateAction { .. } | Error::InvalidUrl(_) => true,
        _ => false,
    }
}

/// One connection's worth of consuming: declare, consume, dispatch, until it drops or shutdown.
async fn session(
    ctx: &Arc<QueueContext>,
    spec: &ConsumeChannel,
    tracker: &TaskTracker,
) -> Result<()> {
    let shared = &ctx.shared;
    let what = format!("consuming queue `{}`", spec.queue);
    let ch = tokio::select! {
        ch = shared.connector.channel(None, &what) => ch?,
        _ = shared.shutdown.cancelled() => return Ok(()),
    };
    topology::declare(&ch, spec, &ctx.settings).await?;
    let tag = format!(
        "eventrabbit-{}-{}",
        spec.queue,
        uuid::Uuid::new_v4().simple()
    );
    let mut consumer: lapin::Consumer = ch
        .basic_consume(
            spec.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp(format!("consuming queue `{}`", spec.queue)))?;
    tracing::info!(queue = %spec.queue, prefetch = ctx.settings.prefetch, "consuming");
    let (acks, ack_task) = ack::spawn(ch.clone(), spec.queue.clone(), ctx.settings.prefetch);
    let result = deliver(ctx, spec, tracker, &ch, &tag, &mut consumer, &acks).await;
    // Every delivery task holds a clone of `acks`: the coalescer ends after their last ack.
    drop(acks);
    if result.is_ok() {
        // Shutdown: let in-flight handlers finish and their acks go out before closing.
        tracker.close();
        tracker.wait().await;
        tracker.reopen();
        let _ = ack_task.await;
        let _ = ch.close(200, "shutdown".into()).await;
        tracing::info!(queue = %spec.queue, "consumer stopped");
    }
    // On a channel error the old tasks finish on their own (their acks are void: the
    // broker redelivers) while the next session starts at once.
    result
}

/// The delivery loop: hands each delivery to its own task until shutdown or a channel error.
async fn deliver(
    ctx: &Arc<QueueContext>,
    spec: &ConsumeChannel,
    tracker: &TaskTracker,
    ch: &lapin::Channel,
    tag: &str,
    consumer: &mut lapin::Consumer,
    acks: &Acks,
) -> Result<()> {
    let shared = &ctx.shared;
    loop {
        tokio::select! {
            biased;
            _ = shared.shutdown.cancelled() => {
                let _ = ch.basic_cancel(tag.into(), BasicCancelOptions::default()).await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    tracker.spawn(process(ctx.clone(), delivery, acks.clone()));
                }
                // The channel or connection failed while consuming: reconnect, never give up.
                Some(Err(e)) => return Err(Error::Connection(e)),
                None => {
                    return Err(Error::Unavailable(Duration::ZERO, format!("consumer of queue `{}` was cancelled by the broker", spec.queue)));
                }
            }
        }
    }
}

/// Handles one delivery from decision to acknowledgement.
async fn process(ctx: Arc<QueueContext>, delivery: Delivery, acks: Acks) {
    let Delivery {
        delivery_tag,
        data,
        properties,
        exchange,
        routing_key,
        redelivered,
        ..
    } = delivery;
    let message = Arc::new(Message {
        queue: ctx.queue.clone(),
        exchange,
        routing_key,
        redelivered,
        properties,
        body: data,
    });
    let settled = match decide(
        &message.body,
        &ctx.routes,
        ctx.settings.max_message_size,
        ctx.settings.unknown_action,
    ) {
        Decision::Handle(reg, range) => {
            let input = Input {
                message: message.clone(),
                data: range,
            };
            let outcome = AssertUnwindSafe((reg.call)(input))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| Err(Failure::Failed(panic_message(panic))));
            settle(&ctx, reg, &message, outcome).await
        }
        Decision::DeadLetter(reason) => fail_for_good(&ctx, &message, reason).await,
        Decision::Drop(why) => {
            tracing::info!(queue = %ctx.queue, "dropping message: {why}");
            Ok(())
        }
    };
    match settled {
        Ok(()) => acks.settle(delivery_tag, Settle::Ack),
        Err(e) => {
            // Nothing was lost: leave it to the broker to redeliver, after a pause against hot loops.
            tracing::error!(queue = %ctx.queue, error = %e, "could not settle message; requeueing it");
            tokio::time::sleep(Duration::from_secs(1)).await;
            acks.settle(delivery_tag, Settle::Requeue);
        }
    }
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("handler panicked: {text}")
}

/// Acts on a handler's outcome; `Ok` means the delivery may be acknowledged.
async fn settle(
    ctx: &QueueContext,
    reg: &'static Registration,
    message: &Message,
    outcome: std::result::Result<Reply, Failure>,
) -> Result<()> {
    let publisher = &ctx.shared.publisher;
    match outcome {
        Ok(Reply(result)) => {
            if let (Some(target), Some(data)) = (reg.publish, result.as_deref()) {
                let body = envelope::encode(target.action, data);
                if let Err(e) = publisher
                    .publish(Outgoing {
                        exchange: target.exchange,
                        routing_key: target.key,
                        body: &body,
                        properties: properties(None),
                        mandatory: false,
                    })
                    .await
                {
                    let error = format!("publishing result as `{}` failed: {e}", target.action);
                    return retry_or_fail(ctx, reg, message, error).await;
                }
            }
            reply(
                publisher,
                message,
                &envelope::encode_reply(result.as_deref()),
            )
            .await
        }
        Err(Failure::Invalid(detail)) => {
            let reason = DeadReason::InvalidData {
                action: reg.action.to_owned(),
                detail,
            };
            fail_for_good(ctx, message, reason).await
        }
        Err(Failure::Failed(error)) => retry_or_fail(ctx, reg, message, error).await,
    }
}

async fn retry_or_fail(
    ctx: &QueueContext,
    reg: &Registration,
    message: &Message,
    error: String,
) -> Result<()> {
    let retries = message.retry_count();
    let policy = &ctx.settings.retry;
    if policy.allows(retries) {
        let delay = policy.delay_for(retries + 1);
        tracing::warn!(queue = %ctx.queue, action = reg.action, retry = retries + 1, ?delay, "handler failed, retrying: {error}");
        dead_letter::schedule_retry(
            &ctx.shared.publisher,
            message,
            retries + 1,
            delay,
            ctx.settings.durable,
            &error,
        )
        .await
    } else {
        let reason = DeadReason::RetriesExhausted {
            action: reg.action.to_owned(),
            attempts: retries + 1,
            error,
        };
        fail_for_good(ctx, message, reason).await
    }
}

/// Dead-letters the message and tells an RPC caller, so nobody waits for nothing.
async fn fail_for_good(ctx: &QueueContext, message: &Message, reason: DeadReason) -> Result<()> {
    tracing::warn!(queue = %ctx.queue, code = reason.code(), "dead-lettering message: {reason}");
    let publisher = &ctx.shared.publisher;
    dead_letter::dead_letter(publisher, message, &ctx.settings.dead_letter_queue, &reason).await?;
    reply(
        publisher,
        message,
        &envelope::encode_error_reply(&reason.to_string()),
    )
    .await
}

/// Answers `reply_to`, if the message has one. A caller that is gone is not an error.
async fn reply(publisher: &Publisher, message: &Message, body: &[u8]) -> Result<()> {
    let Some(reply_to) = message.properties.reply_to() else {
        return Ok(());
    };
    let mut props = properties(None);
    if let Some(c) = message.properties.correlation_id() {
        props = props.with_correlation_id(ShortString::from(c.as_str()));
    }
    match publisher
        .publish(Outgoing {
            exchange: "",
            routing_key: reply_to.as_str(),
            body,
            properties: props,
            mandatory: false,
        })
        .await
    {
        Ok(()) => Ok(()),
        Err(e @ Error::Unavailable(..)) => Err(e),
        Err(e) => {
            tracing::warn!(reply_to = %reply_to, error = %e, "could not send RPC reply");
            Ok(())
        }
    }
}
