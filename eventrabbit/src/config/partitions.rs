//! [`Partitions`]: keyed order across instances, on a consistent-hash exchange.

use super::binding::Binding;
use super::channel::ConsumeChannel;
use super::order_key::OrderKey;
use crate::error::Result;
use crate::wire::limits::check_name;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What the exchange hashes to pick a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HashOn {
    RoutingKey,
    Header(String),
    MessageId,
}

type Configure = Arc<dyn Fn(ConsumeChannel) -> ConsumeChannel + Send + Sync>;

/// A partitioned topology: a consistent-hash exchange (the broker's
/// `rabbitmq_consistent_hash_exchange` plugin) routing each message by a hash of its key
/// into one of `count` partition queues `<exchange>.p0` … `<exchange>.p<count-1>`.
///
/// Consumed with [`Handle::consume_partitions`](crate::Handle::consume_partitions) by any
/// number of service instances: each partition is consumed by exactly one instance at a
/// time (an exclusive consumer), the partitions are spread evenly over the live
/// instances, and a partition whose instance
/// dies (or stops) is taken over by another within about a
/// [`rebalance interval`](Self::rebalance_interval). Within a partition, messages of one key
/// are handled in order, different keys in parallel (the partition queues are keyed by the
/// hashed key, see [`ConsumeChannel::order_by`]): so each key's messages are handled in
/// publishing order, across instances and failovers.
///
/// Publishing needs nothing but the key: publish to the exchange with the key as routing
/// key (or in the header given to [`hash_on_header`](Self::hash_on_header)).
///
/// ```
/// use eventrabbit::{Partitions, RetryConfig};
/// use std::time::Duration;
/// let orders = Partitions::new("orders", 8).configure(|channel| {
///     channel
///         .prefetch(32)
///         .retry(RetryConfig::default().with_max_retries(3).with_delay(Duration::from_secs(1)))
/// });
/// assert_eq!(orders.queue(3), "orders.p3");
/// ```
#[derive(Clone)]
pub struct Partitions {
    pub(crate) exchange: String,
    pub(crate) count: u16,
    hash_on: HashOn,
    configure: Option<Configure>,
    pub(crate) rebalance_interval: Duration,
}

impl fmt::Debug for Partitions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partitions")
            .field("exchange", &self.exchange)
            .field("count", &self.count)
            .field("hash_on", &self.hash_on)
            .field("rebalance_interval", &self.rebalance_interval)
            .finish_non_exhaustive()
    }
}

impl Partitions {
    /// Default: how often an instance looks at who holds which partition.
    pub const DEFAULT_REBALANCE_INTERVAL: Duration = Duration::from_secs(1);

    /// `count` partitions (at least 1) behind the consistent-hash exchange `exchange`,
    /// hashing the routing key.
    #[must_use]
    pub fn new(exchange: impl Into<String>, count: u16) -> Self {
        Self {
            exchange: exchange.into(),
            count: count.max(1),
            hash_on: HashOn::RoutingKey,
            configure: None,
            rebalance_interval: Self::DEFAULT_REBALANCE_INTERVAL,
        }
    }

    /// Hashes (and orders by) the value of header `name` instead of the routing key.
    #[must_use]
    pub fn hash_on_header(mut self, name: impl Into<String>) -> Self {
        self.hash_on = HashOn::Header(name.into());
        self
    }

    /// Hashes the message id instead of the routing key: messages spread over the
    /// partitions with no key order (each partition queue in queue order).
    #[must_use]
    pub fn hash_on_message_id(mut self) -> Self {
        self.hash_on = HashOn::MessageId;
        self
    }

    /// Sets up each partition's [`ConsumeChannel`] (prefetch, retry, queue type, ...):
    /// `configure` gets the partition's channel as this type makes it and returns it
    /// changed. Its queue name and exclusive consumption stay as they are.
    #[must_use]
    pub fn configure(
        mut self,
        configure: impl Fn(ConsumeChannel) -> ConsumeChannel + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// How often an instance counts the live instances, takes free partitions up to its
    /// share and hands over those beyond it (at least 50 ms); also about how long a
    /// partition waits for a new owner when its instance dies.
    #[must_use]
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval.max(Duration::from_millis(50));
        self
    }

    /// The exchange.
    #[must_use]
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// How many partitions.
    #[must_use]
    pub fn count(&self) -> u16 {
        self.count
    }

    /// The queue of partition `index`: `<exchange>.p<index>`.
    #[must_use]
    pub fn queue(&self, index: u16) -> String {
        format!("{}.p{index}", self.exchange)
    }

    /// The queue every live instance consumes (receiving nothing) so that each can count
    /// them: `<exchange>.members`, deleted with its last consumer.
    #[must_use]
    pub fn members_queue(&self) -> String {
        format!("{}.members", self.exchange)
    }

    /// The channel of partition `index`: its queue bound to the exchange with weight 1,
    /// ordered by the hashed key, then as [`configure`](Self::configure) says.
    ///
    /// The queue is not a single-active-consumer queue: RabbitMQ refuses an exclusive
    /// consumer on one ("in exclusive use", even with no consumer), and single active
    /// consumer would give every partition to the first instance that subscribes, where
    /// an exclusive consumer lets each instance know what it holds and spread the
    /// partitions. A `single_active_consumer()` from `configure` is taken out.
    #[must_use]
    pub fn channel(&self, index: u16) -> ConsumeChannel {
        let mut binding = Binding::consistent_hash(&self.exchange);
        let mut channel = ConsumeChannel::new(self.queue(index));
        match &self.hash_on {
            HashOn::RoutingKey => channel = channel.order_by(OrderKey::RoutingKey),
            HashOn::Header(name) => {
                binding = binding.hash_on_header(name);
                channel = channel.order_by(OrderKey::header(name));
            }
            HashOn::MessageId => binding = binding.hash_on_message_id(),
        }
        channel = channel.bind(binding);
        if let Some(configure) = &self.configure {
            channel = configure(channel);
        }
        channel.queue = self.queue(index);
        channel.exclusive_consumer = true;
        channel.arguments.remove("x-single-active-consumer");
        channel
    }

    /// Fails unless the names fit in AMQP's 255 bytes.
    pub(crate) fn check(&self) -> Result<()> {
        check_name("exchange", &self.exchange)?;
        check_name("partition queue", &self.queue(self.count - 1))?;
        check_name("members queue", &self.members_queue())
    }
}
