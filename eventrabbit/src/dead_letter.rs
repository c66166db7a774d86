//! Retries through per-delay wait queues, and the dead-letter queue of each consumed queue.
//!
//! A retry is published to `<queue>.retry.<ms>`, a queue with a message TTL whose
//! dead-letter target is the default exchange with the consumed queue's name as routing
//! key: after the delay the broker moves the message back to that queue only, never
//! through the exchange it first came from. The original is acknowledged only after the
//! broker confirmed the retry (or the dead letter), so a crash in between duplicates a
//! message but never loses it.

use crate::context::{Message, RETRY_COUNT_HEADER};
use crate::dispatch::DeadReason;
use crate::publisher::{Outgoing, Publisher};
use crate::{Error, Result};
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// The name of the wait queue for `delay` in front of `queue`.
pub(crate) fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}

fn long(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The headers of a message leaving `message` after a failure: originals kept, failure
/// bookkeeping added once.
fn failure_headers(message: &Message) -> FieldTable {
    let mut headers = message.headers().cloned().unwrap_or_default();
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

/// Same properties as the original (ids, reply_to, correlation), new headers.
fn republished_properties(message: &Message, headers: FieldTable) -> BasicProperties {
    let p = &message.properties;
    let mut props = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(id) = p.message_id() {
        props = props.with_message_id(id.clone());
    }
    if let Some(c) = p.correlation_id() {
        props = props.with_correlation_id(c.clone());
    }
    if let Some(r) = p.reply_to() {
        props = props.with_reply_to(r.clone());
    }
    props
}

/// Schedules `message` to come back to its queue after `delay`, counted as retry `retry`.
pub(crate) async fn schedule_retry(
    publisher: &Publisher,
    message: &Message,
    retry: u32,
    delay: Duration,
    durable: bool,
    error: &str,
) -> Result<()> {
    let wait_queue = retry_queue_name(&message.queue, delay);
    let ttl = delay.as_millis().min(i32::MAX as u128) as i64;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    args.insert("x-dead-letter-exchange".into(), long(""));
    args.insert("x-dead-letter-routing-key".into(), long(&*message.queue));
    // Gone once unused for a minute after its last message expired.
    args.insert("x-expires".into(), AMQPValue::LongLongInt(ttl + 60_000));
    let ch = publisher
        .channel(tokio::time::Instant::now() + Duration::from_secs(30))
        .await?;
    ch.queue_declare(
        wait_queue.as_str().into(),
        QueueDeclareOptions {
            durable,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await
    .map_err(Error::amqp(format!("declaring retry queue `{wait_queue}`")))?;

    publisher
        .publish(Outgoing {
            exchange: "",
            routing_key: &wait_queue,
            body: &message.body,
            properties: retry_properties(message, retry, error),
            mandatory: true,
        })
        .await
}

/// The properties of `message` sent back as retry number `retry` after `error`.
pub(crate) fn retry_properties(message: &Message, retry: u32, error: &str) -> BasicProperties {
    let mut headers = failure_headers(message);
    headers.insert(
        RETRY_COUNT_HEADER.into(),
        AMQPValue::LongLongInt(retry.into()),
    );
    headers.insert(LAST_ERROR_HEADER.into(), long(error));
    republished_properties(message, headers)
}

/// Declares the dead-letter queue of a consumed queue.
pub(crate) async fn declare_dead_letter_queue(
    ch: &Channel,
    name: &str,
    durable: bool,
) -> Result<()> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
    .map_err(Error::amqp(format!("declaring dead-letter queue `{name}`")))
}

/// Moves `message` to `dead_letter_queue` with headers saying why.
pub(crate) async fn dead_letter(
    publisher: &Publisher,
    message: &Message,
    dead_letter_queue: &str,
    reason: &DeadReason,
) -> Result<()> {
    publisher
        .publish(Outgoing {
            exchange: "",
            routing_key: dead_letter_queue,
            body: &message.body,
            properties: dead_letter_properties(message, reason),
            mandatory: true,
        })
        .await
}

/// The properties of `message` as dead-lettered for `reason`.
pub(crate) fn dead_letter_properties(message: &Message, reason: &DeadReason) -> BasicProperties {
    let mut headers = failure_headers(message);
    headers.insert(REASON_HEADER.into(), long(reason.to_string()));
    headers.insert(REASON_CODE_HEADER.into(), long(reason.code()));
    let attempts = match reason {
        DeadReason::RetriesExhausted { attempts, .. } => *attempts,
        DeadReason::InvalidData { .. } => 1,
        _ => 0,
    };
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongLongInt(attempts.into()),
    );
    republished_properties(message, headers)
}

/// Moves up to `max` messages from `dead_letter_queue` back to `queue`, with their retry
/// count and dead-letter headers cleared. Returns how many were moved.
pub(crate) async fn redrive(
    publisher: &Publisher,
    dead_letter_queue: &str,
    queue: &str,
    max: usize,
) -> Result<usize> {
    let ch = publisher
        .channel(tokio::time::Instant::now() + Duration::from_secs(30))
        .await?;
    let mut moved = 0;
    while moved < max {
        let Some(got) = ch
            .basic_get(dead_letter_queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(Error::amqp(format!(
                "reading dead-letter queue `{dead_letter_queue}`"
            )))?
        else {
            break;
        };
        let delivery = got.delivery;
        let headers =
            without_failure_headers(delivery.properties.headers().clone().unwrap_or_default());
        let props = delivery.properties.clone().with_headers(headers);
        publisher
            .publish(Outgoing {
                exchange: "",
                routing_key: queue,
                body: &delivery.data,
                properties: props,
                mandatory: true,
            })
            .await?;
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(Error::amqp(format!(
                "acknowledging in `{dead_letter_queue}`"
            )))?;
        moved += 1;
    }
    Ok(moved)
}

/// `headers` without the retry and dead-letter bookkeeping (for a fresh start).
pub(crate) fn without_failure_headers(headers: FieldTable) -> FieldTable {
    let kept: std::collections::BTreeMap<ShortString, AMQPValue> = headers
        .inner()
        .iter()
        .filter(|(k, _)| {
            ![
                REASON_HEADER,
                REASON_CODE_HEADER,
                ATTEMPTS_HEADER,
                RETRY_COUNT_HEADER,
                LAST_ERROR_HEADER,
                FIRST_FAILURE_HEADER,
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    kept.into()
}
