//! Event logs (RabbitMQ streams) and the consumers that replay them.

use super::binding::Binding;
use super::handling::{Handling, handling_setters};
use super::{QueueConfig, Resolved, RetryConfig};
use crate::config::queue_kind::{QueueArguments, QueueType};
use crate::error::Result;
use crate::wire::limits::check_name;
use lapin::types::{AMQPValue, FieldTable};
use std::time::{Duration, SystemTime};

/// An event log: a RabbitMQ stream, an append-only log kept for its retention period,
/// bound to exchanges like any queue, so producers need no change. Declared with
/// [`Handle::declare_log`](crate::Handle::declare_log); read with a [`StreamConsumer`].
///
/// ```
/// use eventrabbit::{Binding, EventLog};
/// use std::time::Duration;
/// let log = EventLog::new("users-log")
///     .bind(Binding::fanout("users"))
///     .max_age(Duration::from_secs(30 * 24 * 3600))
///     .max_bytes(10 * 1024 * 1024 * 1024);
/// # let _ = log;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct EventLog {
    pub(crate) name: String,
    pub(crate) bindings: Vec<Binding>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<u64>,
    pub(crate) max_segment_bytes: Option<u64>,
    pub(crate) partitions: Option<u16>,
}

impl EventLog {
    /// The stream `name`, kept until retention says otherwise (without any, RabbitMQ keeps
    /// everything).
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bindings: Vec::new(),
            max_age: None,
            max_bytes: None,
            max_segment_bytes: None,
            partitions: None,
        }
    }

    /// Partitions the log (the layout RabbitMQ calls a super stream): `n` streams
    /// `<log>.p0` … behind a consistent-hash exchange named `<log>` (the
    /// `rabbitmq_consistent_hash_exchange` plugin), which takes what the log's bindings
    /// route to it and sends each event to one partition by a hash of its routing key. A
    /// key's events are all in one partition, in order; partitions are read in parallel,
    /// each by one instance of a named [`StreamConsumer`] at a time (see
    /// [`StreamConsumer::partitions`]). The retention settings apply to each partition.
    #[must_use]
    pub fn partitions(mut self, n: u16) -> Self {
        self.partitions = Some(n.max(1));
        self
    }

    /// The stream of partition `index`: `<log>.p<index>`.
    #[must_use]
    pub fn partition(&self, index: u16) -> String {
        partition_stream(&self.name, index)
    }

    /// Binds the log to an exchange (declared with it): what is published there is
    /// appended.
    #[must_use]
    pub fn bind(mut self, binding: Binding) -> Self {
        self.bindings.push(binding);
        self
    }

    /// Events older than `age` may be removed (`x-max-age`, whole segments at a time).
    #[must_use]
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// The log keeps at most about `bytes` (`x-max-length-bytes`, whole segments at a time).
    #[must_use]
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// The size of the log's segment files (`x-stream-max-segment-size-bytes`), the unit
    /// retention removes.
    #[must_use]
    pub fn max_segment_bytes(mut self, bytes: u64) -> Self {
        self.max_segment_bytes = Some(bytes);
        self
    }

    /// The log's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The arguments the stream is declared with.
    pub(crate) fn arguments(&self) -> FieldTable {
        let mut args = QueueArguments::default();
        args.set("x-queue-type", QueueArguments::long("stream"));
        if let Some(age) = self.max_age {
            args.set(
                "x-max-age",
                QueueArguments::long(&format!("{}s", age.as_secs().max(1))),
            );
        }
        if let Some(bytes) = self.max_bytes {
            args.set(
                "x-max-length-bytes",
                AMQPValue::LongLongInt(i64::try_from(bytes).unwrap_or(i64::MAX)),
            );
        }
        if let Some(bytes) = self.max_segment_bytes {
            args.set(
                "x-stream-max-segment-size-bytes",
                AMQPValue::LongLongInt(i64::try_from(bytes).unwrap_or(i64::MAX)),
            );
        }
        args.0
    }

    /// Fails unless every name fits in AMQP's 255 bytes.
    pub(crate) fn check(&self) -> Result<()> {
        check_name("event log", &self.name)?;
        if let Some(n) = self.partitions {
            check_name("event log partition", &self.partition(n - 1))?;
        }
        for b in &self.bindings {
            check_name("exchange", &b.exchange)?;
            check_name("binding key", &b.routing_key)?;
        }
        Ok(())
    }
}

/// Where a [`StreamConsumer`] starts reading, the first time (a named consumer goes on
/// from its stored position afterwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// The oldest event the log still keeps: the whole history.
    First,
    /// The last chunk of events written (RabbitMQ writes events in chunks: this may be
    /// several events; in the test broker, a chunk is one event).
    Last,
    /// Only events written from now on.
    Next,
    /// The event at this offset (or the first kept, if it is gone).
    Offset(u64),
    /// The first events written at or after this time (chunk precision).
    Timestamp(SystemTime),
}

/// A consumer that reads an [`EventLog`] in order through the registered handlers: history
/// first, then live events, with no gap and no duplicate between them.
///
/// A named consumer stores its position on the broker (the stream protocol's offset
/// tracking) every [`store_every`](Self::store_every) events and every
/// [`store_interval`](Self::store_interval), and at shutdown; after a restart (even a
/// `kill -9`) it goes on after the last stored position, so it handles at most that many
/// events again.
///
/// A handler that fails is retried in place, after the retry policy's delays (a log
/// cannot be requeued into, and the events behind wait: order is kept); once retries are
/// exhausted, or at once for a message that is not a valid envelope, a copy is
/// dead-lettered to `<log>.<name>.dlq` and the consumer moves on. An event is never
/// skipped without a dead letter. With unbounded retries, the consumer waits on a failing
/// event until it succeeds.
///
/// ```
/// use eventrabbit::{StartAt, StreamConsumer};
/// let projection = StreamConsumer::new("users-log")
///     .name("user-email-counts")
///     .start_at(StartAt::First)
///     .actions(["USER_CREATED", "EMAIL_SENT"]);
/// # let _ = projection;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConsumer {
    pub(crate) log: String,
    pub(crate) name: Option<String>,
    pub(crate) start: StartAt,
    pub(crate) handling: Handling,
    pub(crate) store_every: u64,
    pub(crate) store_interval: Duration,
    pub(crate) partitions: Option<u16>,
    pub(crate) rebalance_interval: Duration,
}

/// The stream of partition `index` of log `log`.
fn partition_stream(log: &str, index: u16) -> String {
    format!("{log}.p{index}")
}

impl StreamConsumer {
    /// Default: store the position after this many events.
    pub const DEFAULT_STORE_EVERY: u64 = 1000;
    /// Default: store the position at least this often while events come.
    pub const DEFAULT_STORE_INTERVAL: Duration = Duration::from_secs(1);

    /// Reads `log` from the start the first time (see [`StartAt`]), unnamed: it keeps no
    /// position.
    #[must_use]
    pub fn new(log: impl Into<String>) -> Self {
        Self {
            log: log.into(),
            name: None,
            start: StartAt::First,
            handling: Handling::default(),
            store_every: Self::DEFAULT_STORE_EVERY,
            store_interval: Self::DEFAULT_STORE_INTERVAL,
            partitions: None,
            rebalance_interval: Duration::from_secs(1),
        }
    }

    /// Reads a log of `n` partitions ([`EventLog::partitions`]). A named consumer shares
    /// the partitions with the other instances running it: each partition is read by one
    /// live instance at a time (the exclusive consumer of its lease queue
    /// `<log>.p<i>.<name>.lease`), spread evenly, taken over when its instance dies, and
    /// read on from the position stored for it (each partition keeps its own). An unnamed
    /// one reads every partition itself. Either way each key's events are read in order.
    #[must_use]
    pub fn partitions(mut self, n: u16) -> Self {
        self.partitions = Some(n.max(1));
        self
    }

    /// For a partitioned log: how often an instance looks at who reads which partition
    /// (at least 50 ms; 1 s by default), about how long a partition waits for a new reader
    /// when its instance dies.
    #[must_use]
    pub fn rebalance_interval(mut self, interval: Duration) -> Self {
        self.rebalance_interval = interval.max(Duration::from_millis(50));
        self
    }

    /// The reader of partition `index` alone: this consumer on `<log>.p<index>`.
    pub(crate) fn partition(&self, index: u16) -> StreamConsumer {
        let mut one = self.clone();
        one.log = partition_stream(&self.log, index);
        one.partitions = None;
        one
    }

    /// Names the consumer: it keeps its position, and goes on from it after a restart.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Where it starts the first time (a named consumer with a stored position starts
    /// after it instead).
    #[must_use]
    pub fn start_at(mut self, start: StartAt) -> Self {
        self.start = start;
        self
    }

    handling_setters!();

    /// Stores the position after every `n` events handled (at least 1).
    #[must_use]
    pub fn store_every(mut self, n: u64) -> Self {
        self.store_every = n.max(1);
        self
    }

    /// Stores the position at least this often while events are handled.
    #[must_use]
    pub fn store_interval(mut self, interval: Duration) -> Self {
        self.store_interval = interval;
        self
    }

    /// The log read.
    #[must_use]
    pub fn log(&self) -> &str {
        &self.log
    }

    /// What this consumer is called in health reports: `<log>` or `<log>#<name>`.
    #[must_use]
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{}#{name}", self.log),
            None => self.log.clone(),
        }
    }

    /// Its dead-letter queue: `<log>.<name>.dlq` (`<log>.dlq` when unnamed).
    pub(crate) fn dead_letter_queue(&self, suffix: &str) -> String {
        match &self.name {
            Some(name) => format!("{}.{name}{suffix}", self.log),
            None => format!("{}{suffix}", self.log),
        }
    }

    pub(crate) fn resolve(&self, defaults: &QueueConfig, retry: &RetryConfig) -> Resolved {
        Resolved {
            queue_type: QueueType::Classic,
            arguments: FieldTable::default(),
            crash_loop_limit: None,
            prefetch: 1,
            durable: true,
            exchange_durable: true,
            max_message_size: self.handling.max_message_size_or(defaults),
            unknown_action: self.handling.unknown_action_or(defaults),
            retry: self.handling.retry_or(retry),
            dead_letter_queue: self.dead_letter_queue(&defaults.dead_letter_suffix),
            failure_events: defaults.failure_events.clone(),
        }
    }

    /// Fails unless the names fit.
    pub(crate) fn check(&self, settings: &Resolved) -> Result<()> {
        check_name("event log", &self.log)?;
        if let Some(name) = &self.name {
            check_name("stream consumer name", name)?;
        }
        check_name("dead-letter queue", &settings.dead_letter_queue)
    }
}
