//! The headers eventrabbit reads and writes, and how their values are read.

use lapin::types::{AMQPValue, FieldTable};

/// Header carrying how many times a message has been retried.
pub const RETRY_COUNT_HEADER: &str = "x-retry-count";
/// Header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// Header: why the message was dead-lettered (text).
pub const REASON_HEADER: &str = "x-dead-letter-reason";
/// Header: the machine-readable code of the reason (`not-json`, `retries-exhausted`, ...).
pub const REASON_CODE_HEADER: &str = "x-dead-letter-code";
/// Header: the queue the message was consumed from.
pub const ORIGINAL_QUEUE_HEADER: &str = "x-original-queue";
/// Header: the exchange the message was first published to.
pub const ORIGINAL_EXCHANGE_HEADER: &str = "x-original-exchange";
/// Header: the routing key the message was first published with.
pub const ORIGINAL_ROUTING_KEY_HEADER: &str = "x-original-routing-key";
/// Header: how many times a handler was run on the message.
pub const ATTEMPTS_HEADER: &str = "x-attempts";
/// Header: when the message first failed (milliseconds since the Unix epoch).
pub const FIRST_FAILURE_HEADER: &str = "x-first-failure-time";
/// Header: the last handler error.
pub const LAST_ERROR_HEADER: &str = "x-last-error";

/// The headers a failure adds; a redrive removes them for a fresh start.
pub(crate) const FAILURE_HEADERS: [&str; 6] = [
    REASON_HEADER,
    REASON_CODE_HEADER,
    ATTEMPTS_HEADER,
    RETRY_COUNT_HEADER,
    LAST_ERROR_HEADER,
    FIRST_FAILURE_HEADER,
];

/// An integer header value as a `u32`, when it is one (or a string holding one).
pub(crate) fn header_u32(v: &AMQPValue) -> Option<u32> {
    let n: i128 = match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.parse().ok()?,
        AMQPValue::ShortString(s) => s.as_str().parse().ok()?,
        _ => return None,
    };
    u32::try_from(n).ok()
}

/// A header value as text, when it is a string, a boolean or an integer.
pub(crate) fn header_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        other => header_u32(other).map(|n| n.to_string()),
    }
}

/// The retry count a message carries (0 when absent or unreadable).
pub(crate) fn retry_count(headers: Option<&FieldTable>) -> u32 {
    headers
        .and_then(|h| h.inner().get(RETRY_COUNT_HEADER))
        .and_then(header_u32)
        .unwrap_or(0)
}
