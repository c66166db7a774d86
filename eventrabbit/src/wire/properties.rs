//! The properties of what eventrabbit publishes.

use super::trace_context::{TraceContext, with_traceparent};
use lapin::BasicProperties;
use lapin::types::{FieldTable, ShortString};

/// Properties of everything eventrabbit publishes: JSON, persistent, with a fresh
/// `message_id`, the time (whole seconds) and, if given, a `traceparent`.
pub(crate) fn properties(trace: Option<TraceContext>) -> BasicProperties {
    let props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(new_message_id()))
        .with_timestamp(now_secs());
    match trace {
        Some(trace) => props.with_headers(with_traceparent(FieldTable::default(), &trace)),
        None => props,
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh uuid v4, hyphenated, lowercase.
pub(crate) fn new_message_id() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_owned()
}

/// The same identity as `original` (message and correlation ids, reply_to), as JSON
/// and persistent, with `headers`: a message sent on again after a failure.
pub(crate) fn republished(original: &BasicProperties, headers: FieldTable) -> BasicProperties {
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(id) = original.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(c) = original.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    if let Some(r) = original.reply_to() {
        props = props.with_reply_to(r.clone());
    }
    if let Some(t) = original.timestamp() {
        props = props.with_timestamp(*t);
    }
    props
}
