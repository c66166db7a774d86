//! Delayed publishing without a broker plugin: a message to publish later goes to a wait
//! queue `eventrabbit.delay.<ms>ms:<exchange>:<routing key>` whose message TTL is the
//! delay and whose dead-letter target is the message's exchange and routing key; when the
//! TTL runs out the broker publishes it there. Wait queues are durable and the messages
//! persistent, so a delayed message survives a broker restart; a wait queue is removed by
//! the broker a minute after the last message it holds is due (its lease is renewed while
//! messages are sent to it, see [`retry`](super::retry)).
//!
//! In front of a cluster (`QueueType::Quorum` for the delay queues, which follow
//! `QueueConfig::queue_type` unless `Config::delay_queue_type` says otherwise) a wait queue
//! is a quorum queue, named `eventrabbit.delay.quorum.<ms>ms:..`, that survives the loss of
//! a node and moves due messages on with at-least-once dead-lettering.
//!
//! Delays are rounded up onto a grid first ([`on_grid`](crate::wire::delay::on_grid)), so
//! that a service publishing at many different times makes few wait queues.

use super::retry::{LEASE_MARGIN_MS, Target, quorum_arguments};
use crate::config::QueueType;
use crate::wire::limits::MAX_NAME_LEN;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::time::Duration;

/// The wait queue holding messages for `exchange` / `routing_key` for `delay` (on the
/// grid), and its arguments.
pub(crate) fn wait_queue(
    exchange: &str,
    routing_key: &str,
    delay: Duration,
    queue_type: QueueType,
) -> (String, FieldTable) {
    let ms = delay.as_millis() as i64;
    let prefix = match queue_type {
        QueueType::Quorum => "eventrabbit.delay.quorum.",
        _ => "eventrabbit.delay.",
    };
    let readable = format!("{prefix}{ms}ms:{exchange}:{routing_key}");
    let name = if readable.len() <= MAX_NAME_LEN {
        readable
    } else {
        format!(
            "{prefix}{ms}ms:{:016x}",
            fnv1a(&[exchange.as_bytes(), b"\0", routing_key.as_bytes()])
        )
    };
    let long = |s: &str| AMQPValue::LongString(LongString::from(s));
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ms));
    args.insert("x-dead-letter-exchange".into(), long(exchange));
    args.insert("x-dead-letter-routing-key".into(), long(routing_key));
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(ms + LEASE_MARGIN_MS),
    );
    if queue_type == QueueType::Quorum {
        quorum_arguments(&mut args);
    }
    (name, args)
}

/// The [`Target`] a delayed message is sent to.
pub(crate) fn target<'a>(queue: &'a str, arguments: FieldTable) -> Target<'a> {
    Target {
        queue,
        durable: true,
        arguments,
        what: "delay queue",
    }
}

/// A stable 64-bit hash (FNV-1a), so that every process names a wait queue alike.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_hashed_to_fit() {
        let classic = QueueType::Classic;
        let (short, args) = wait_queue("orders", "order.placed", Duration::from_secs(5), classic);
        assert_eq!(short, "eventrabbit.delay.5000ms:orders:order.placed");
        assert!(args.inner().contains_key("x-dead-letter-routing-key"));
        let key = "k".repeat(255);
        for queue_type in [classic, QueueType::Quorum] {
            let (long, _) = wait_queue("orders", &key, Duration::from_secs(5), queue_type);
            assert!(long.len() <= MAX_NAME_LEN, "{long}");
            assert_eq!(
                long,
                wait_queue("orders", &key, Duration::from_secs(5), queue_type).0
            );
        }
    }

    #[test]
    fn quorum_wait_queues_move_messages_on_at_least_once() {
        let (name, args) = wait_queue("orders", "k", Duration::from_secs(5), QueueType::Quorum);
        assert_eq!(name, "eventrabbit.delay.quorum.5000ms:orders:k");
        let arg = |k: &str| args.inner().get(k).cloned();
        let long = |v: &str| Some(AMQPValue::LongString(LongString::from(v)));
        assert_eq!(arg("x-queue-type"), long("quorum"));
        assert_eq!(arg("x-dead-letter-strategy"), long("at-least-once"));
        assert_eq!(arg("x-overflow"), long("reject-publish"));
    }
}
