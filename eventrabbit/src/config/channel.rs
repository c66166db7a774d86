//! [`ConsumeChannel`]: which queue to consume, and how it is declared and bound.

use super::binding::{Binding, ExchangeKind};
use super::failure_events::FailureEvents;
use super::handling::{Handling, handling_setters};
use super::order_key::OrderKey;
use super::queue_kind::{DeadLetterStrategy, Overflow, QueueArguments, QueueType};
use super::{QueueConfig, RetryConfig, UnknownAction};
use crate::error::{Error, Result};
use crate::wire::limits::check_name;
use crate::wire::names::retry_queue_name;
use lapin::types::{AMQPValue, FieldTable};
use std::time::Duration;

/// One queue to consume. Without a binding it consumes from the queue alone (fed
/// through the default exchange); with bindings, each exchange is declared and the queue
/// bound to it.
///
/// ```
/// use eventrabbit::{Binding, ConsumeChannel, ExchangeKind};
/// let channel = ConsumeChannel::new("calendar_user_sync")
///     .exchange("PROFILE_FANOUT_EXCHANGE", ExchangeKind::Fanout)
///     .bind(Binding::topic("calendar", "event.#"))
///     .prefetch(20);
/// # let _ = channel;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeChannel {
    pub(crate) queue: String,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) prefetch: Option<u16>,
    pub(crate) durable: Option<bool>,
    pub(crate) exchange_durable: Option<bool>,
    pub(crate) exclusive: bool,
    pub(crate) auto_delete: bool,
    pub(crate) handling: Handling,
    pub(crate) queue_type: Option<QueueType>,
    pub(crate) arguments: QueueArguments,
    pub(crate) crash_loop_limit: Option<u32>,
    pub(crate) failure_events: Option<FailureEvents>,
    pub(crate) order_by: Option<OrderKey>,
    /// Consumes as the queue's only consumer (`basic.consume` exclusive): a partition.
    pub(crate) exclusive_consumer: bool,
}

impl ConsumeChannel {
    /// The longest time a keyed consumer's retries of one message may wait in all (the
    /// sum of its retry policy's delays): a third of the broker's default
    /// `consumer_timeout`.
    pub const MAX_KEYED_RETRY_WAIT: Duration = Duration::from_secs(600);
}

/// A quorum queue's default limit of redeliveries before a message is dead-lettered as a
/// `crash-loop`.
pub const DEFAULT_CRASH_LOOP_LIMIT: u32 = 10;

impl ConsumeChannel {
    /// Consumes `queue`, declared durable unless told otherwise.
    #[must_use]
    pub fn new(queue: impl Into<String>) -> Self {
        Self {
            queue: queue.into(),
            bindings: Vec::new(),
            prefetch: None,
            durable: None,
            exchange_durable: None,
            exclusive: false,
            auto_delete: false,
            handling: Handling::default(),
            queue_type: None,
            arguments: QueueArguments::default(),
            crash_loop_limit: None,
            failure_events: None,
            order_by: None,
            exclusive_consumer: false,
        }
    }

    /// Declares `exchange` of `kind` and binds the queue to it with routing key `""`
    /// (for a direct exchange: the queue's name). Shorthand for
    /// `.bind(Binding::new(exchange, kind))`.
    #[must_use]
    pub fn exchange(self, exchange: impl Into<String>, kind: ExchangeKind) -> Self {
        self.bind(Binding::new(exchange, kind))
    }

    /// Declares the binding's exchange and binds the queue to it; a queue may have several
    /// bindings (to several exchanges, or to one under several keys), all declared and
    /// recovered together.
    #[must_use]
    pub fn bind(mut self, binding: Binding) -> Self {
        self.bindings.push(binding);
        self
    }

    /// Deliveries (and handlers) in flight at once; 1 handles messages one by one, in order.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Keyed order with parallelism: messages with the same `key` are handled one at a
    /// time, in the order the queue delivers them, while messages of different keys run
    /// concurrently up to the [`prefetch`](Self::prefetch).
    ///
    /// A key waits for its retries: a failed handler is retried in place, after the retry
    /// policy's delay, before the key's next message runs (its delivery stays
    /// unacknowledged meanwhile; other keys go on). So the retry policy of every handler of
    /// the queue must be bounded, with all its delays together at most
    /// [`MAX_KEYED_RETRY_WAIT`](Self::MAX_KEYED_RETRY_WAIT), well below the broker's
    /// `consumer_timeout`; `consume` fails at start-up otherwise, naming the handler.
    /// Once retries are exhausted the message is dead-lettered and the key moves on.
    ///
    /// Order holds within one consumer; for several instances, use partitions
    /// ([`Partitions`](crate::Partitions)), each consumed by one instance at a time.
    #[must_use]
    pub fn order_by(mut self, key: OrderKey) -> Self {
        self.order_by = Some(key);
        self
    }

    /// Whether the queue (with its dead-letter and retry wait queues) survives a broker
    /// restart; its exchanges too, unless [`exchange_durable`](Self::exchange_durable)
    /// says otherwise.
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
        self
    }

    /// Whether the exchanges this queue is bound to are declared durable, apart from the
    /// queue (a [`Binding::durable`] says it for one exchange).
    #[must_use]
    pub fn exchange_durable(mut self, durable: bool) -> Self {
        self.exchange_durable = Some(durable);
        self
    }

    /// Makes the queue exclusive to this connection.
    #[must_use]
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Deletes the queue when its last consumer goes.
    #[must_use]
    pub fn auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }

    handling_setters!();

    /// Declares the queue as `queue_type` (classic by default, or as
    /// [`QueueConfig::queue_type`] says).
    #[must_use]
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = Some(queue_type);
        self
    }

    /// Declares a quorum queue: `.queue_type(QueueType::Quorum)`.
    #[must_use]
    pub fn quorum(self) -> Self {
        self.queue_type(QueueType::Quorum)
    }

    /// Declares the queue with argument `key` (for what no typed setter covers). A queue
    /// that exists with another value for it makes `consume` fail, naming the queue and
    /// the argument.
    #[must_use]
    pub fn argument(mut self, key: &str, value: AMQPValue) -> Self {
        self.arguments.set(key, value);
        self
    }

    /// At most `n` messages in the queue (`x-max-length`); see [`overflow`](Self::overflow).
    #[must_use]
    pub fn max_length(mut self, n: u64) -> Self {
        self.arguments.max_length(n);
        self
    }

    /// At most `bytes` of message bodies in the queue (`x-max-length-bytes`).
    #[must_use]
    pub fn max_length_bytes(mut self, bytes: u64) -> Self {
        self.arguments.max_length_bytes(bytes);
        self
    }

    /// What a full queue does (`x-overflow`).
    #[must_use]
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.arguments.overflow(overflow);
        self
    }

    /// Messages older than `ttl` leave the queue (`x-message-ttl`); on a quorum queue they
    /// go to the dead-letter queue.
    #[must_use]
    pub fn message_ttl(mut self, ttl: Duration) -> Self {
        self.arguments.message_ttl(ttl);
        self
    }

    /// Only one consumer of the queue receives at a time; another takes over when it
    /// goes (`x-single-active-consumer`): messages handled in order across instances.
    #[must_use]
    pub fn single_active_consumer(mut self) -> Self {
        self.arguments.single_active_consumer();
        self
    }

    /// A priority queue with priorities up to `max` (`x-max-priority`, classic queues).
    #[must_use]
    pub fn max_priority(mut self, max: u8) -> Self {
        self.arguments.max_priority(max);
        self
    }

    /// The broker's own limit of deliveries of a message (`x-delivery-limit`, quorum
    /// queues); the crash-loop limit stays below it, so eventrabbit dead-letters first.
    #[must_use]
    pub fn delivery_limit(mut self, n: u32) -> Self {
        self.arguments.delivery_limit(n);
        self
    }

    /// How the broker dead-letters from a quorum queue (`x-dead-letter-strategy`).
    #[must_use]
    pub fn dead_letter_strategy(mut self, strategy: DeadLetterStrategy) -> Self {
        self.arguments.dead_letter_strategy(strategy);
        self
    }

    /// On a quorum queue, a message delivered more than `n` times (its handler keeps
    /// crashing the process, so it is never settled) is dead-lettered as `crash-loop`
    /// instead of being run again. Defaults to [`DEFAULT_CRASH_LOOP_LIMIT`].
    #[must_use]
    pub fn crash_loop_limit(mut self, n: u32) -> Self {
        self.crash_loop_limit = Some(n.max(1));
        self
    }

    /// Announces every message this queue dead-letters for good (see [`FailureEvents`]);
    /// overrides [`QueueConfig::failure_events`].
    #[must_use]
    pub fn failure_events(mut self, events: FailureEvents) -> Self {
        self.failure_events = Some(events);
        self
    }

    /// The queue's name.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The exchanges and keys the queue is bound with.
    #[must_use]
    pub fn bindings(&self) -> &[Binding] {
        &self.bindings
    }

    pub(crate) fn resolve(&self, defaults: &QueueConfig, retry: &RetryConfig) -> Resolved {
        let durable = self.durable.unwrap_or(defaults.durable);
        let queue_type = self.queue_type.unwrap_or(defaults.queue_type);
        let dead_letter_queue = format!("{}{}", self.queue, defaults.dead_letter_suffix);
        let crash_loop_limit = (queue_type == QueueType::Quorum).then(|| {
            let limit = self.crash_loop_limit.unwrap_or(DEFAULT_CRASH_LOOP_LIMIT);
            // Below the broker's own limit, which drops the message to the dead-letter
            // exchange without saying why.
            match self.arguments.delivery_limit_value() {
                Some(broker) => limit.min(broker.saturating_sub(1)).max(1),
                None => limit,
            }
        });
        Resolved {
            queue_type,
            arguments: queue_arguments(queue_type, &self.arguments, &dead_letter_queue),
            crash_loop_limit,
            // 0 would mean "unlimited" to the broker: never, whatever the configuration says.
            prefetch: self.prefetch.unwrap_or(defaults.prefetch).max(1),
            durable,
            exchange_durable: self
                .exchange_durable
                .or(defaults.exchange_durable)
                .unwrap_or(durable),
            max_message_size: self.handling.max_message_size_or(defaults),
            unknown_action: self.handling.unknown_action_or(defaults),
            retry: self.handling.retry_or(retry),
            dead_letter_queue,
            failure_events: self
                .failure_events
                .clone()
                .or_else(|| defaults.failure_events.clone()),
        }
    }
}

/// The arguments a queue is declared with: what the user gave, and for a quorum queue its
/// type and (unless given) a dead-letter target of the queue's dead-letter queue, so that
/// what the broker drops (expired, over a length limit, over the delivery limit) is kept.
fn queue_arguments(queue_type: QueueType, given: &QueueArguments, dlq: &str) -> FieldTable {
    let mut args = given.clone();
    if queue_type == QueueType::Quorum {
        args.set("x-queue-type", QueueArguments::long(queue_type.name()));
        if args.get("x-dead-letter-exchange").is_none() {
            args.set("x-dead-letter-exchange", QueueArguments::long(""));
            args.set("x-dead-letter-routing-key", QueueArguments::long(dlq));
        }
    }
    args.0
}

impl ConsumeChannel {
    /// Fails unless the queue can be declared as asked: a quorum queue is durable, not
    /// exclusive, not auto-deleted.
    pub(crate) fn check(&self, settings: &Resolved) -> Result<()> {
        self.check_names(settings)?;
        if settings.queue_type == QueueType::Quorum {
            let wrong = [
                (!settings.durable, "non-durable"),
                (self.exclusive, "exclusive"),
                (self.auto_delete, "auto-deleted"),
            ];
            if let Some((_, what)) = wrong.iter().find(|(bad, _)| *bad) {
                return Err(Error::InvalidQueue {
                    queue: self.queue.clone(),
                    reason: format!("a quorum queue cannot be {what}"),
                });
            }
        }
        Ok(())
    }

    /// Fails unless every name this queue needs fits in AMQP's 255 bytes: the queue, its
    /// dead-letter queue, its longest retry wait queue, each exchange, key and header.
    fn check_names(&self, settings: &Resolved) -> Result<()> {
        check_name("queue", &self.queue)?;
        check_name("dead-letter queue", &settings.dead_letter_queue)?;
        check_name(
            "retry wait queue",
            &retry_queue_name(&self.queue, settings.retry.delay_for(u32::MAX)),
        )?;
        if let Some(key) = &self.arguments.1 {
            check_name("queue argument", key)?;
        }
        if let Some(events) = &settings.failure_events {
            check_name("failure events exchange", &events.exchange)?;
            if let Some(key) = &events.routing_key {
                check_name("failure events routing key", key)?;
            }
        }
        for b in &self.bindings {
            check_name("exchange", &b.exchange)?;
            check_name("binding key", &b.routing_key)?;
            if let Some(key) = &b.long_key {
                check_name("binding header", key)?;
            }
        }
        Ok(())
    }
}

/// A channel's settings after defaults are applied.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) queue_type: QueueType,
    /// The arguments the queue is declared with.
    pub(crate) arguments: FieldTable,
    /// Deliveries after which a message is a crash loop (quorum queues).
    pub(crate) crash_loop_limit: Option<u32>,
    pub(crate) prefetch: u16,
    pub(crate) durable: bool,
    pub(crate) exchange_durable: bool,
    pub(crate) max_message_size: usize,
    pub(crate) unknown_action: UnknownAction,
    pub(crate) retry: RetryConfig,
    pub(crate) dead_letter_queue: String,
    pub(crate) failure_events: Option<FailureEvents>,
}
