//! What kind of queue is declared, and with which arguments.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use std::time::Duration;

/// The type of a consumed queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum QueueType {
    /// A classic queue (the default, as Python eventrabbit declares them).
    #[default]
    Classic,
    /// A quorum queue: replicated over a majority of the cluster's nodes, the production
    /// choice on a cluster. Its dead-letter and retry wait queues are quorum queues too, and
    /// retries come back to it with at-least-once dead-lettering.
    Quorum,
}

impl QueueType {
    /// The `x-queue-type` argument's value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

/// What a queue with a length limit does when full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Overflow {
    /// Drops (or dead-letters) the oldest message.
    DropHead,
    /// Refuses new messages: their publishes are negatively confirmed.
    RejectPublish,
    /// Refuses new messages and dead-letters them (classic queues only).
    RejectPublishDlx,
}

impl Overflow {
    fn name(self) -> &'static str {
        match self {
            Overflow::DropHead => "drop-head",
            Overflow::RejectPublish => "reject-publish",
            Overflow::RejectPublishDlx => "reject-publish-dlx",
        }
    }
}

/// How a quorum queue dead-letters (to eventrabbit's dead-letter queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeadLetterStrategy {
    /// RabbitMQ's default: a dead letter may be lost if the target is unavailable.
    AtMostOnce,
    /// Dead letters are confirmed by their target (needs `Overflow::RejectPublish`).
    AtLeastOnce,
}

/// The arguments a queue is declared with, by name; set through
/// [`ConsumeChannel`](crate::ConsumeChannel)'s typed setters or
/// [`ConsumeChannel::argument`](crate::ConsumeChannel::argument).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct QueueArguments(pub(crate) FieldTable, pub(crate) LongKey);

/// An argument key over 255 bytes, refused when the queue is consumed (never a panic).
pub(crate) type LongKey = Option<String>;

impl QueueArguments {
    pub(crate) fn set(&mut self, key: &str, value: AMQPValue) {
        match ShortString::try_new(key) {
            Ok(key) => {
                self.0.insert(key, value);
            }
            Err(_) => self.1 = Some(key.to_owned()),
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if self.0.contains_key(key) {
            let mut kept = self.0.inner().clone();
            kept.remove(key);
            self.0 = FieldTable::from(kept);
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&AMQPValue> {
        self.0.inner().get(key)
    }

    pub(crate) fn long(value: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(value))
    }

    pub(crate) fn max_length(&mut self, n: u64) {
        self.set("x-max-length", AMQPValue::LongLongInt(saturating_i64(n)));
    }

    pub(crate) fn max_length_bytes(&mut self, n: u64) {
        self.set(
            "x-max-length-bytes",
            AMQPValue::LongLongInt(saturating_i64(n)),
        );
    }

    pub(crate) fn overflow(&mut self, overflow: Overflow) {
        self.set("x-overflow", Self::long(overflow.name()));
    }

    pub(crate) fn message_ttl(&mut self, ttl: Duration) {
        self.set(
            "x-message-ttl",
            AMQPValue::LongLongInt(saturating_i64(ttl.as_millis() as u64)),
        );
    }

    pub(crate) fn single_active_consumer(&mut self) {
        self.set("x-single-active-consumer", AMQPValue::Boolean(true));
    }

    pub(crate) fn max_priority(&mut self, max: u8) {
        self.set("x-max-priority", AMQPValue::ShortShortUInt(max));
    }

    pub(crate) fn delivery_limit(&mut self, n: u32) {
        self.set("x-delivery-limit", AMQPValue::LongLongInt(i64::from(n)));
    }

    pub(crate) fn dead_letter_strategy(&mut self, strategy: DeadLetterStrategy) {
        let name = match strategy {
            DeadLetterStrategy::AtMostOnce => "at-most-once",
            DeadLetterStrategy::AtLeastOnce => "at-least-once",
        };
        self.set("x-dead-letter-strategy", Self::long(name));
    }

    /// The `x-delivery-limit` given, if any.
    pub(crate) fn delivery_limit_value(&self) -> Option<u32> {
        self.get("x-delivery-limit")
            .and_then(crate::wire::headers::header_count)
    }
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
