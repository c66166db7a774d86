//! The headers eventrabbit reads and writes, and how their values are read.

use lapin::types::{AMQPValue, FieldTable};

/// Header carrying how many times a message has been retried.
pub const RETRY_COUNT_HEADER: &str = "x-retry-count";
/// Header a quorum queue sets: how many times the message was delivered before.
pub const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";
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

/// Header: how many times the message was moved back from its dead-letter queue.
pub const REDRIVE_COUNT_HEADER: &str = "x-redrive-count";
/// Header: the dead-letter code of the message when it was last moved back.
pub const REDRIVEN_CODE_HEADER: &str = "x-redriven-code";
/// Header: the handler attempts of the message before it was last moved back.
pub const REDRIVEN_ATTEMPTS_HEADER: &str = "x-redriven-attempts";
/// Header: the quorum queue's delivery count of the message before it was last moved back.
pub const REDRIVEN_DELIVERY_COUNT_HEADER: &str = "x-redriven-delivery-count";

/// The headers a failure adds; a redrive removes them for a fresh start.
pub(crate) const FAILURE_HEADERS: [&str; 6] = [
    REASON_HEADER,
    REASON_CODE_HEADER,
    ATTEMPTS_HEADER,
    RETRY_COUNT_HEADER,
    LAST_ERROR_HEADER,
    FIRST_FAILURE_HEADER,
];

/// An integer header value, of whatever integer type (or a string holding one).
pub(crate) fn header_int(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(n) => (*n).into(),
        AMQPValue::ShortShortUInt(n) => (*n).into(),
        AMQPValue::ShortInt(n) => (*n).into(),
        AMQPValue::ShortUInt(n) => (*n).into(),
        AMQPValue::LongInt(n) => (*n).into(),
        AMQPValue::LongUInt(n) => (*n).into(),
        AMQPValue::LongLongInt(n) => (*n).into(),
        AMQPValue::Timestamp(n) => (*n).into(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok()?,
        _ => return None,
    })
}

/// A header value as text, when it is a string, a boolean or an integer.
pub(crate) fn header_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        other => header_int(other).map(|n| n.to_string()),
    }
}

/// A count carried in a header, read saturating: negative counts are 0, counts beyond
/// `u32::MAX` are `u32::MAX`; a float counts as its whole part; anything else is `None`.
pub(crate) fn header_count(v: &AMQPValue) -> Option<u32> {
    let n = match v {
        AMQPValue::Float(f) => f64::from(*f).trunc() as i128,
        AMQPValue::Double(f) => f.trunc() as i128,
        other => header_int(other)?,
    };
    Some(n.clamp(0, i128::from(u32::MAX)) as u32)
}

/// How many times a quorum queue delivered a message before without it being settled
/// (its `x-delivery-count` header; 0 when absent).
pub(crate) fn delivery_count(headers: Option<&FieldTable>) -> u32 {
    headers
        .and_then(|h| h.inner().get(DELIVERY_COUNT_HEADER))
        .and_then(header_count)
        .unwrap_or(0)
}

/// The retry count a message carries (0 when absent or unreadable).
pub(crate) fn retry_count(headers: Option<&FieldTable>) -> u32 {
    headers
        .and_then(|h| h.inner().get(RETRY_COUNT_HEADER))
        .and_then(header_count)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    #[test]
    fn counts_of_any_type_and_value_are_read_saturating() {
        let count = |v: AMQPValue| {
            let mut h = FieldTable::default();
            h.insert(RETRY_COUNT_HEADER.into(), v);
            retry_count(Some(&h))
        };
        assert_eq!(count(AMQPValue::LongUInt(u32::MAX)), u32::MAX);
        assert_eq!(count(AMQPValue::LongLongInt(i64::MAX)), u32::MAX);
        assert_eq!(count(AMQPValue::LongLongInt(-5)), 0);
        assert_eq!(count(AMQPValue::ShortShortInt(-1)), 0);
        assert_eq!(count(AMQPValue::Double(3.9)), 3);
        assert_eq!(count(AMQPValue::Double(f64::NAN)), 0);
        assert_eq!(count(AMQPValue::Double(1e300)), u32::MAX);
        assert_eq!(count(AMQPValue::LongString(LongString::from("7"))), 7);
        assert_eq!(
            count(AMQPValue::LongString(LongString::from(
                "99999999999999999999"
            ))),
            u32::MAX
        );
        assert_eq!(count(AMQPValue::LongString(LongString::from("x"))), 0);
        assert_eq!(count(AMQPValue::Boolean(true)), 0);
        assert_eq!(retry_count(None), 0);
    }
}
