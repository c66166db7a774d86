//! The headers of a message sent on after a failure: to a retry wait queue or to the
//! dead-letter queue. The original headers are kept, the failure bookkeeping added.

use super::dead_reason::DeadReason;
use crate::handler::context::Message;
use crate::wire::headers::{
    self, ATTEMPTS_HEADER, DELIVERY_COUNT_HEADER, FAILURE_HEADERS, FIRST_FAILURE_HEADER,
    LAST_ERROR_HEADER, ORIGINAL_EXCHANGE_HEADER, ORIGINAL_QUEUE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER, REASON_CODE_HEADER, REASON_HEADER, REDRIVE_COUNT_HEADER,
    REDRIVEN_ATTEMPTS_HEADER, REDRIVEN_CODE_HEADER, REDRIVEN_DELIVERY_COUNT_HEADER,
    RETRY_COUNT_HEADER,
};
use crate::wire::limits::{self, MAX_HEADER_TEXT, MAX_QUOTED, cap};
use crate::wire::properties::republished;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::{SystemTime, UNIX_EPOCH};

/// The headers kept when a message's own headers are dropped from its dead letter.
const KEPT_WHEN_DROPPING: [&str; 3] = [
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    FIRST_FAILURE_HEADER,
];

fn long(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The headers of a message leaving `message` after a failure: the originals (if kept),
/// failure bookkeeping added once.
fn failure_headers(message: &Message, keep_originals: bool) -> FieldTable {
    let mut headers = message.headers().cloned().unwrap_or_default();
    if !keep_originals {
        // Only the small bookkeeping headers an earlier failure wrote are kept.
        headers = headers
            .inner()
            .iter()
            .filter(|(k, v)| {
                KEPT_WHEN_DROPPING.contains(&k.as_str()) && limits::value_size(v) <= 512
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
    }
    let has = |h: &FieldTable, k: &str| h.inner().contains_key(k);
    if !has(&headers, ORIGINAL_EXCHANGE_HEADER) {
        headers.insert(
            ORIGINAL_EXCHANGE_HEADER.into(),
            long(message.exchange.as_str()),
        );
        headers.insert(
            ORIGINAL_ROUTING_KEY_HEADER.into(),
            long(message.routing_key.as_str()),
        );
    }
    if !has(&headers, FIRST_FAILURE_HEADER) {
        headers.insert(
            FIRST_FAILURE_HEADER.into(),
            AMQPValue::LongLongInt(now_ms()),
        );
    }
    headers.insert(ORIGINAL_QUEUE_HEADER.into(), long(&*message.queue));
    headers
}

/// The properties of `message` sent back as retry number `retry` after `error` (capped).
pub(crate) fn retry_properties(message: &Message, retry: u32, error: &str) -> BasicProperties {
    let mut headers = failure_headers(message, true);
    headers.insert(
        RETRY_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(retry.into()),
    );
    headers.insert(
        LAST_ERROR_HEADER.into(),
        long(cap(error, MAX_HEADER_TEXT).into_owned()),
    );
    republished(&message.properties, headers)
}

/// The properties of `message` as dead-lettered for `reason`, fitting in a frame of
/// `frame_max` bytes: if the message's own headers leave no room for ours, they are
/// dropped and the reason says so (`unpublishable`).
pub(crate) fn dead_letter_properties(
    message: &Message,
    reason: &DeadReason,
    frame_max: usize,
) -> BasicProperties {
    let props = dead_letter_properties_with(message, reason, true);
    match limits::check_properties(&props, frame_max) {
        Ok(()) => props,
        Err(e) => {
            let reason = DeadReason::Unpublishable {
                first: Box::new(reason.clone()),
                detail: e.to_string(),
            };
            dead_letter_properties_with(message, &reason, false)
        }
    }
}

fn dead_letter_properties_with(
    message: &Message,
    reason: &DeadReason,
    keep_originals: bool,
) -> BasicProperties {
    let mut headers = failure_headers(message, keep_originals);
    headers.insert(
        REASON_HEADER.into(),
        long(cap(&reason.to_string(), MAX_HEADER_TEXT).into_owned()),
    );
    headers.insert(REASON_CODE_HEADER.into(), long(reason.code()));
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(reason.attempts().into()),
    );
    if let Some(error) = reason.last_error() {
        // The final attempt's error (a retry carries the one before it).
        headers.insert(
            LAST_ERROR_HEADER.into(),
            long(cap(error, MAX_HEADER_TEXT).into_owned()),
        );
    }
    republished(&message.properties, headers)
}

/// `headers` of a dead letter moved back to its queue, for a fresh start: without the
/// counters that decide dead-lettering (the retry count, the attempts, a quorum queue's
/// `x-delivery-count` for crash-loop detection) and the failure bookkeeping, with the
/// history kept in `x-redrive-count`, `x-redriven-code`, `x-redriven-attempts` and
/// `x-redriven-delivery-count`.
pub(crate) fn without_failure_headers(headers: FieldTable) -> FieldTable {
    let old = headers.inner();
    let count = |key: &str| old.get(key).and_then(headers::header_count);
    let mut kept: std::collections::BTreeMap<_, _> = old
        .iter()
        .filter(|(k, _)| {
            !FAILURE_HEADERS.contains(&k.as_str()) && k.as_str() != DELIVERY_COUNT_HEADER
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let redrives = count(REDRIVE_COUNT_HEADER).unwrap_or(0).saturating_add(1);
    kept.insert(
        REDRIVE_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(redrives.into()),
    );
    if let Some(code) = old.get(REASON_CODE_HEADER).and_then(headers::header_text) {
        kept.insert(
            REDRIVEN_CODE_HEADER.into(),
            long(cap(&code, MAX_QUOTED).into_owned()),
        );
    }
    for (from, to) in [
        (ATTEMPTS_HEADER, REDRIVEN_ATTEMPTS_HEADER),
        (DELIVERY_COUNT_HEADER, REDRIVEN_DELIVERY_COUNT_HEADER),
    ] {
        if let Some(n) = count(from) {
            kept.insert(to.into(), AMQPValue::LongLongInt(n.into()));
        }
    }
    kept.into()
}
