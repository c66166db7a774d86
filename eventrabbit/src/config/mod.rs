//! What eventrabbit is told to do: the connection-wide [`Config`], the retry policy, the
//! queue defaults and each consumed queue's [`ConsumeChannel`]. Plain data, no I/O.

mod binding;
mod channel;
mod failure_events;
mod handling;
mod order_key;
mod partitions;
mod publish;
mod queue;
mod queue_kind;
mod retry;
pub(crate) mod state;
mod stream;

pub use binding::{Binding, ExchangeKind};
pub(crate) use channel::Resolved;
pub use channel::{ConsumeChannel, DEFAULT_CRASH_LOOP_LIMIT};
pub use failure_events::FailureEvents;
pub use order_key::OrderKey;
pub use partitions::Partitions;
pub use publish::PublishOptions;
pub use queue::{QueueConfig, UnknownAction};
pub use queue_kind::{DeadLetterStrategy, Overflow, QueueType};
pub use retry::{RetryConfig, RetryOverride};
pub use stream::{EventLog, StartAt, StreamConsumer};

use std::time::Duration;

/// When published messages carry a W3C `traceparent` header.
///
/// The header is not free: on RabbitMQ 3.10 a message with a header table costs the broker
/// noticeably more than one without (see BENCHMARKS.md), so by default it is only written
/// where somebody can see the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TracePropagation {
    /// Continue every trace that arrived in a `traceparent` header, and continue or start
    /// traces while a `tracing` subscriber records eventrabbit's spans (INFO level or more
    /// verbose). Messages nobody traces carry no header.
    #[default]
    Auto,
    /// Every published message carries a `traceparent`: outside a handler a new trace starts.
    Always,
    /// No message carries a `traceparent`; received ones are still recorded on spans.
    Never,
}

/// Everything [`build_event_dependencies`](crate::build_event_dependencies) takes besides the URL.
///
/// ```
/// use eventrabbit::{Config, QueueConfig, RetryConfig};
/// use std::time::Duration;
/// let config = Config::default()
///     .with_retry(RetryConfig::default().with_max_retries(5).with_delay(Duration::from_secs(1)))
///     .with_rpc_timeout(Duration::from_secs(10));
/// assert_eq!(config.retry.max_retries, Some(5));
/// # let _ = QueueConfig::default();
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Close the publishing channel (and the connection, when nothing consumes) after this long
    /// unused (looked at every quarter of it, so closed at most a quarter of it later).
    pub idle_timeout: Option<Duration>,
    /// How failed handlers are retried.
    pub retry: RetryConfig,
    /// Defaults for consumed queues.
    pub queue: QueueConfig,
    /// How long an RPC call waits for its reply by default.
    pub rpc_timeout: Duration,
    /// How long a publish waits for the broker (reconnecting meanwhile) before failing.
    pub publish_timeout: Duration,
    /// Upper bound of the wait between reconnection attempts.
    pub max_reconnect_delay: Duration,
    /// How long one attempt to connect (TCP, TLS and the AMQP handshake) may take before it
    /// is abandoned and retried.
    pub connect_timeout: Duration,
    /// Name shown for the connection in the management UI.
    pub connection_name: String,
    /// Extra CA certificates (PEM) trusted for `amqps://` URLs, e.g. a private CA.
    pub tls_ca_pem: Option<String>,
    /// When published messages carry a `traceparent` header.
    pub trace_propagation: TracePropagation,
    /// The port of the stream protocol (`rabbitmq_stream` plugin), used by stream
    /// consumers on the broker's host (5552 by default).
    pub stream_port: u16,
    /// The port of the stream protocol over TLS, used instead of `stream_port` for
    /// `amqps://` URLs (5551 by default, RabbitMQ's own).
    pub stream_tls_port: u16,
    /// How often each side checks that the connection is alive: a connection that goes
    /// silent (no FIN/RST, e.g. a dropped NAT entry) is noticed after about twice this.
    /// Used unless the URL sets `heartbeat` itself.
    pub heartbeat: Duration,
    /// How often a consumer declares its exchanges and bindings again, so that an exchange
    /// deleted and re-created by someone else delivers to it again (`None`: only when it
    /// reconnects or the broker cancels it).
    pub topology_check_interval: Option<Duration>,
    /// Whether a publish no queue receives fails with
    /// [`Error::Unroutable`](crate::Error::Unroutable) (`true`), or succeeds with a warning
    /// and a count in `eventrabbit_publish_unroutable_total` (`false`, the default).
    pub mandatory: bool,
    /// The largest message body published; a larger one fails at once with
    /// [`Error::TooLarge`](crate::Error::TooLarge) instead of being refused by the broker.
    /// Set it to the broker's `max_message_size` if that is lower than RabbitMQ's default.
    pub max_publish_size: usize,
    /// How long a consumer keeps sending a message's retry, dead letter, failure event,
    /// reply or result through weather (nacks, a lost connection, a leader change) before
    /// it gives the delivery back to the broker. Together with the pause before a give-back
    /// (at most 5 s), this bounds how long a finished delivery stays unacknowledged: keep
    /// it well below the broker's `consumer_timeout` (30 min by default), which closes the
    /// channel of a consumer holding a delivery longer.
    pub settle_timeout: Duration,
    /// The type of the wait queues of delayed publishes (`publish_after`, `publish_at`);
    /// `None`: as [`QueueConfig::queue_type`]. Quorum wait queues survive the loss of a node.
    pub delay_queue_type: Option<QueueType>,
    /// Application state handed to handlers taking [`State<T>`](crate::State) parameters
    /// (and to middleware through [`MessageContext::state`](crate::MessageContext::state)).
    pub state: state::StateMap,
}

impl Config {
    /// Default idle timeout (as in Python eventrabbit).
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
    /// Default RPC deadline.
    pub const DEFAULT_RPC_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default publish deadline.
    pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default cap between reconnection attempts.
    pub const DEFAULT_MAX_RECONNECT_DELAY: Duration = Duration::from_secs(10);
    /// Default limit of one connection attempt.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default port of the stream protocol.
    pub const DEFAULT_STREAM_PORT: u16 = 5552;
    /// Default port of the stream protocol over TLS.
    pub const DEFAULT_STREAM_TLS_PORT: u16 = 5551;
    /// Default heartbeat: a silent connection is noticed within about 20 to 25 seconds.
    pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
    /// Default interval between checks of a consumer's exchanges and bindings.
    pub const DEFAULT_TOPOLOGY_CHECK_INTERVAL: Duration = Duration::from_secs(30);
    /// Default largest body published: RabbitMQ's default `max_message_size` (128 MiB).
    pub const DEFAULT_MAX_PUBLISH_SIZE: usize = 128 * 1024 * 1024;
    /// Default time a consumer sends a retry or a dead letter through weather.
    pub const DEFAULT_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

    /// Sets how long a consumer sends a retry, a dead letter or a reply through weather
    /// before giving the delivery back (keep it well below the broker's `consumer_timeout`).
    #[must_use]
    pub fn with_settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// Sets the type of the wait queues of delayed publishes (quorum on a cluster, so that
    /// delayed messages survive the loss of a node).
    #[must_use]
    pub fn with_delay_queue_type(mut self, queue_type: QueueType) -> Self {
        self.delay_queue_type = Some(queue_type);
        self
    }

    /// Registers `value` for every handler parameter of type [`State<T>`](crate::State)
    /// (one value per type; a second value of the same type replaces the first). Made once
    /// in `main` and shared: a database pool, a client, settings.
    ///
    /// ```
    /// use eventrabbit::Config;
    /// struct Settings { greeting: String }
    /// let config = Config::default().with_state(Settings { greeting: "hi".into() });
    /// assert_eq!(config.state.get::<Settings>().unwrap().greeting, "hi");
    /// ```
    #[must_use]
    pub fn with_state<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.state.insert(value);
        self
    }

    /// Registers a value the service also keeps an `Arc` of, for `State<T>` parameters.
    #[must_use]
    pub fn with_state_arc<T: Send + Sync + 'static>(mut self, value: std::sync::Arc<T>) -> Self {
        self.state.insert_arc(value);
        self
    }

    /// Sets the idle timeout (`None` never closes an idle connection).
    #[must_use]
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> Self {
        self.idle_timeout = idle;
        self
    }

    /// Sets the retry policy.
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Sets the queue defaults.
    #[must_use]
    pub fn with_queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }

    /// Sets the default RPC deadline.
    #[must_use]
    pub fn with_rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = timeout;
        self
    }

    /// Sets the publish deadline.
    #[must_use]
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Sets the cap between reconnection attempts.
    #[must_use]
    pub fn with_max_reconnect_delay(mut self, delay: Duration) -> Self {
        self.max_reconnect_delay = delay;
        self
    }

    /// Sets how long one connection attempt may take.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Trusts the CA certificates in `pem` (besides the usual roots) for `amqps://` URLs.
    #[must_use]
    pub fn with_tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// Sets when published messages carry a `traceparent` header.
    #[must_use]
    pub fn with_trace_propagation(mut self, propagation: TracePropagation) -> Self {
        self.trace_propagation = propagation;
        self
    }

    /// Sets the heartbeat interval (at least 1 s; a connection silent for about twice this
    /// is closed and opened again).
    #[must_use]
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Sets the port of the stream protocol.
    #[must_use]
    pub fn with_stream_port(mut self, port: u16) -> Self {
        self.stream_port = port;
        self
    }

    /// Sets the port of the stream protocol over TLS (for `amqps://` URLs); the
    /// connection trusts the same CA as AMQP ([`Config::with_tls_ca_pem`]).
    #[must_use]
    pub fn with_stream_tls_port(mut self, port: u16) -> Self {
        self.stream_tls_port = port;
        self
    }

    /// Sets how often consumers declare their exchanges and bindings again (`None`: never
    /// but on reconnection or cancellation).
    #[must_use]
    pub fn with_topology_check_interval(mut self, interval: Option<Duration>) -> Self {
        self.topology_check_interval = interval;
        self
    }

    /// Sets whether every publish that no queue receives is an error.
    #[must_use]
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// Sets the largest message body published.
    #[must_use]
    pub fn with_max_publish_size(mut self, bytes: usize) -> Self {
        self.max_publish_size = bytes;
        self
    }

    /// Sets the connection name.
    #[must_use]
    pub fn with_connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = name.into();
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            idle_timeout: Some(Self::DEFAULT_IDLE_TIMEOUT),
            retry: RetryConfig::default(),
            queue: QueueConfig::default(),
            rpc_timeout: Self::DEFAULT_RPC_TIMEOUT,
            publish_timeout: Self::DEFAULT_PUBLISH_TIMEOUT,
            max_reconnect_delay: Self::DEFAULT_MAX_RECONNECT_DELAY,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            connection_name: "eventrabbit".to_owned(),
            tls_ca_pem: None,
            trace_propagation: TracePropagation::default(),
            max_publish_size: Self::DEFAULT_MAX_PUBLISH_SIZE,
            heartbeat: Self::DEFAULT_HEARTBEAT,
            stream_port: Self::DEFAULT_STREAM_PORT,
            stream_tls_port: Self::DEFAULT_STREAM_TLS_PORT,
            topology_check_interval: Some(Self::DEFAULT_TOPOLOGY_CHECK_INTERVAL),
            mandatory: false,
            settle_timeout: Self::DEFAULT_SETTLE_TIMEOUT,
            delay_queue_type: None,
            state: state::StateMap::default(),
        }
    }
}
