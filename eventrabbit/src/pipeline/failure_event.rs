//! The event announcing a message dead-lettered for good (see
//! [`FailureEvents`](crate::FailureEvents)): `<ACTION>_FAILED` carrying the original data,
//! the reason code and text, the attempts, the queue and the message id.

use super::dead_reason::DeadReason;
use super::transport::{Outgoing, Transport};
use crate::config::FailureEvents;
use crate::error::Result;
use crate::handler::context::Message;
use crate::telemetry::trace;
use crate::wire::envelope;
use crate::wire::properties::Plain;
use serde::Serialize;
use serde_json::value::RawValue;

#[derive(Serialize)]
struct Failed<'a> {
    action: &'a str,
    data: &'a RawValue,
    code: &'a str,
    reason: String,
    attempts: u32,
    queue: &'a str,
    message_id: Option<&'a str>,
}

/// Publishes the failure event of `message`, if its envelope names an action (a body that
/// is not an envelope has no action to announce). A transient failure is an error (the
/// message goes back to its queue, and is announced when it fails again); a refusal (no
/// such exchange) is logged and does not keep the message from its dead-letter queue.
pub(crate) async fn announce<T: Transport>(
    transport: &T,
    events: &FailureEvents,
    queue: &str,
    message: &Message,
    reason: &DeadReason,
) -> Result<()> {
    let Ok(env) = envelope::decode(&message.body) else {
        return Ok(());
    };
    let raw = std::str::from_utf8(&message.body[env.data.clone()]).unwrap_or("{}");
    let data: &RawValue = serde_json::from_str(raw).unwrap_or_else(|_| empty());
    let failed = Failed {
        action: &env.action,
        data,
        code: reason.code(),
        reason: reason.to_string(),
        attempts: reason.attempts(),
        queue,
        message_id: message.properties.message_id().as_ref().map(|s| s.as_str()),
    };
    let event_action = format!("{}{}", env.action, events.suffix);
    let payload = serde_json::value::to_raw_value(&failed).expect("plain fields serialize");
    let body = envelope::encode(&event_action, &payload);
    let sent = transport
        .publish(Outgoing {
            exchange: &events.exchange,
            routing_key: events.routing_key.as_deref().unwrap_or(&event_action),
            body: &body,
            properties: Plain::new(trace::handler_trace()).into(),
            mandatory: false,
        })
        .await;
    match sent {
        Ok(()) => Ok(()),
        Err(e) if e.is_transient() => Err(e),
        Err(e) => {
            tracing::warn!(queue, exchange = %events.exchange, error = %e, "could not publish the failure event `{event_action}`");
            Ok(())
        }
    }
}

fn empty() -> &'static RawValue {
    serde_json::from_str("{}").expect("an empty object")
}
