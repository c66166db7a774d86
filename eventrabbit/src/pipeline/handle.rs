//! What happens to one message, from decision to settlement, whatever carries it: the
//! real runner (over lapin) and the in-memory test broker both call [`handle`], so
//! dispatch, retry policy, dead-lettering and replies are decided in one place.

use super::dead_reason::DeadReason;
use super::decide::{Decision, decide};
use super::failure_event;
use super::policy::QueuePolicy;
use super::transport::{Outgoing, Transport};
use crate::error::Result;
use crate::handler::context::{Message, MessageContext};
use crate::handler::input::{Failure, Input, Reply};
use crate::handler::middleware::{Call, run_through};
use crate::handler::pattern;
use crate::handler::registration::Registration;
use crate::handler::registry::Route;
use crate::telemetry::{metric, trace};
use crate::wire::limits::{MAX_HEADER_TEXT, cap};
use crate::wire::properties::Plain;
use crate::wire::{envelope, headers};
use futures_util::FutureExt;
use lapin::types::ShortString;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

/// Decides, runs the handler and settles. `Ok` means the message may be acknowledged;
/// `Err` means it could not be settled and must be given back to the broker.
pub(crate) async fn handle<T: Transport>(
    policy: &QueuePolicy,
    transport: &T,
    message: &Arc<Message>,
) -> Result<()> {
    if let Some(limit) = policy.settings.crash_loop_limit {
        let deliveries = headers::delivery_count(message.headers());
        if deliveries >= limit {
            // Delivered this often and never settled: its handler keeps taking the
            // process down. Do not run it again.
            let reason = DeadReason::CrashLoop { deliveries, limit };
            return Box::pin(fail_for_good(policy, transport, None, message, reason)).await;
        }
    }
    let decision = decide(
        &message.body,
        &policy.routes,
        policy.settings.max_message_size,
        policy.settings.unknown_action,
    );
    match decision {
        Decision::Handle(route, range) => {
            let reg = route.reg;
            tracing::Span::current().record("action", reg.action);
            let input = Input::new(message.clone(), range, policy.state.clone());
            let started = Instant::now();
            let batched = reg.batch.is_some() && message.retry_count() == 0;
            let outcome = if policy.layers.is_empty() && !batched {
                AssertUnwindSafe((reg.call)(input)).catch_unwind().await
            } else {
                Box::pin(through_layers(policy, route, message, input, batched)).await
            }
            .unwrap_or_else(|panic| Err(Failure::Failed(panic_message(panic))));
            policy
                .metrics(route)
                .handled(outcome.is_ok(), started.elapsed());
            // The common case needs no publishing: settle without the large publish state.
            let nothing_to_send =
                reg.publish.is_none() && message.properties.reply_to().is_none() && outcome.is_ok();
            if nothing_to_send {
                return Ok(());
            }
            // Boxed so that every delivery task does not carry the publishing futures.
            Box::pin(settle(policy, transport, route, message, outcome)).await
        }
        Decision::DeadLetter(reason) => {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let body = String::from_utf8_lossy(envelope::truncate_bytes(&message.body, 1024));
                tracing::debug!(queue = %policy.queue, %body, "poison message");
            }
            Box::pin(fail_for_good(policy, transport, None, message, reason)).await
        }
        Decision::Drop(why) => {
            tracing::info!(queue = %policy.queue, "dropping message: {why}");
            Ok(())
        }
    }
}

/// Runs the handler through the queue's layers, joining its batch when `batched` (a
/// message whose data does not fit is refused alone, before it joins; a message retried
/// after its batch failed runs alone, so one bad message cannot fail the good ones
/// again); a layer that panics fails the message as a handler that panics does.
async fn through_layers(
    policy: &QueuePolicy,
    route: Route,
    message: &Arc<Message>,
    input: Input,
    batched: bool,
) -> std::thread::Result<std::result::Result<Reply, Failure>> {
    let call = match route.reg.batch {
        Some((spec, call)) if batched => {
            if let Err(invalid) = (route.reg.validate)(&input) {
                return Ok(Err(invalid));
            }
            Call::Batch(policy.batcher(route), spec, call)
        }
        _ => Call::Single(route.reg.call),
    };
    let ctx = MessageContext {
        message: message.clone(),
        state: policy.state.clone(),
    };
    AssertUnwindSafe(run_through(&policy.layers.0, &ctx, call, input))
        .catch_unwind()
        .await
}

/// The action a failure names: the message's own, also when a pattern served it.
fn action_name(reg: &Registration, message: &Message) -> String {
    if pattern::is_pattern(reg.action)
        && let Ok(env) = envelope::decode(&message.body)
    {
        return env.action.into_owned();
    }
    reg.action.to_owned()
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("handler panicked: {text}")
}

/// Acts on a handler's outcome.
async fn settle<T: Transport>(
    policy: &QueuePolicy,
    transport: &T,
    route: Route,
    message: &Message,
    outcome: std::result::Result<Reply, Failure>,
) -> Result<()> {
    let reg = route.reg;
    match outcome {
        Ok(Reply(result)) => {
            if let (Some(target), Some(data)) = (reg.publish, result.as_deref()) {
                let body = envelope::encode(target.action, data);
                let published = transport
                    .publish(Outgoing {
                        exchange: target.exchange,
                        routing_key: target.key,
                        body: &body,
                        properties: Plain::new(trace::handler_trace()).into(),
                        mandatory: transport.mandatory(),
                    })
                    .await;
                if let Err(e) = published {
                    let error = format!("publishing result as `{}` failed: {e}", target.action);
                    return retry_or_fail(policy, transport, route, message, error).await;
                }
            }
            reply(
                transport,
                message,
                &envelope::encode_reply(result.as_deref()),
            )
            .await
        }
        Err(Failure::Invalid(detail)) => {
            let reason = DeadReason::InvalidData {
                action: action_name(reg, message),
                detail,
            };
            fail_for_good(policy, transport, Some(reg.action), message, reason).await
        }
        Err(Failure::Failed(error)) => {
            retry_or_fail(policy, transport, route, message, error).await
        }
        Err(Failure::Rejected(error)) => {
            let reason = DeadReason::Rejected {
                action: action_name(reg, message),
                attempts: message.retry_count().saturating_add(1),
                error,
            };
            fail_for_good(policy, transport, Some(reg.action), message, reason).await
        }
    }
}

async fn retry_or_fail<T: Transport>(
    policy: &QueuePolicy,
    transport: &T,
    route: Route,
    message: &Message,
    error: String,
) -> Result<()> {
    let reg = route.reg;
    let retries = message.retry_count();
    let attempt = retries.saturating_add(1);
    let retry = policy.retry(route);
    if !retry.allows(retries) {
        let reason = DeadReason::RetriesExhausted {
            action: action_name(reg, message),
            attempts: attempt,
            error,
        };
        return fail_for_good(policy, transport, Some(reg.action), message, reason).await;
    }
    let delay = retry.pick_delay(attempt);
    tracing::warn!(queue = %policy.queue, action = reg.action, retry = attempt, ?delay, "handler failed, retrying: {}", cap(&error, MAX_HEADER_TEXT));
    policy.metrics(route).retried();
    let scheduled = transport
        .schedule_retry(message, attempt, delay, &policy.settings, &error)
        .await;
    match scheduled {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(e),
        // Refused for good (a wait queue declared otherwise, headers that leave no room):
        // dead-letter it rather than run the handler again and again.
        Err(e) => {
            let reason = DeadReason::RetryUnpublishable {
                action: action_name(reg, message),
                attempts: attempt,
                error,
                cause: e.to_string(),
            };
            fail_for_good(policy, transport, Some(reg.action), message, reason).await
        }
    }
}

/// Dead-letters the message and tells an RPC caller, so nobody waits for nothing.
async fn fail_for_good<T: Transport>(
    policy: &QueuePolicy,
    transport: &T,
    action: Option<&'static str>,
    message: &Message,
    reason: DeadReason,
) -> Result<()> {
    tracing::warn!(queue = %policy.queue, code = reason.code(), "dead-lettering message: {reason}");
    metric::dead_lettered(&policy.queue, action, reason.code());
    if let Some(events) = &policy.settings.failure_events {
        // Announced before the dead letter is sent: if announcing fails for now, the
        // message goes back and is announced when it fails again (at least once).
        failure_event::announce(transport, events, &policy.queue, message, &reason).await?;
    }
    transport
        .dead_letter(message, &reason, &policy.settings)
        .await?;
    reply(
        transport,
        message,
        &envelope::encode_error_reply(&reason.to_string()),
    )
    .await
}

/// Answers `reply_to`, if the message has one. A caller that is gone is not an error.
async fn reply<T: Transport>(transport: &T, message: &Message, body: &[u8]) -> Result<()> {
    let Some(reply_to) = message.properties.reply_to() else {
        return Ok(());
    };
    let mut props = Plain::new(trace::handler_trace());
    if let Some(c) = message.properties.correlation_id() {
        props = props.with_correlation_id(ShortString::from(c.as_str()));
    }
    let sent = transport
        .publish(Outgoing {
            exchange: "",
            routing_key: reply_to.as_str(),
            body,
            properties: props.into(),
            mandatory: false,
        })
        .await;
    match sent {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(reply_to = %reply_to, error = %e, "could not send RPC reply");
            Ok(())
        }
    }
}
