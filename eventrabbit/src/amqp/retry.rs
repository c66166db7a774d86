//! Retries through per-delay wait queues.
//!
//! A retry is published to `<queue>.retry.<ms>ms`, a queue with a message TTL whose
//! dead-letter target is the default exchange with the consumed queue's name as routing
//! key: after the delay the broker moves the message back to that queue only, never
//! through the exchange it first came from. The original is acknowledged only after the
//! broker confirmed the retry (or the dead letter), so a crash in between duplicates a
//! message but never loses it.

use super::publisher::Publisher;
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::pipeline::failure::retry_properties;
use crate::pipeline::transport::Outgoing;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;

/// The name of the wait queue for `delay` in front of `queue`.
pub(crate) fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
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
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(&*message.queue)),
    );
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
