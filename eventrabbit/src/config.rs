//! Configuration: connection-wide [`Config`], message [`RetryConfig`], per-queue [`QueueConfig`].

use std::time::Duration;

/// How failed handlers are retried. Delays grow as
/// `delay * multiplier^(attempt - 1)`, capped at `max_delay`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first attempt; `None` retries forever.
    pub max_retries: Option<u32>,
    /// Delay before the first retry.
    pub delay: Duration,
    /// Factor applied to the delay for each further retry.
    pub multiplier: f64,
    /// Upper bound of the delay.
    pub max_delay: Duration,
}

impl RetryConfig {
    /// Default delay before the first retry (as in Python eventrabbit).
    pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);
    /// Default growth factor.
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    /// Default cap on the delay.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);

    /// Sets the number of retries after the first attempt.
    #[must_use]
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = Some(max_retries);
        self
    }

    /// Sets the delay before the first retry.
    #[must_use]
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Sets the growth factor of the delay (values below 1 are treated as 1).
    #[must_use]
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the cap of the delay.
    #[must_use]
    pub fn with_max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// The delay before retry number `retry` (1-based), rounded to whole milliseconds
    /// (the broker's TTL unit) and at least 1 ms.
    #[must_use]
    pub fn delay_for(&self, retry: u32) -> Duration {
        let factor = self
            .multiplier
            .max(1.0)
            .powi(retry.saturating_sub(1).min(64) as i32);
        let ms = (self.delay.as_millis() as f64 * factor).min(self.max_delay.as_millis() as f64);
        Duration::from_millis((ms.round() as u64).max(1))
    }

    /// Whether a message that has been retried `retries` times may be retried again.
    #[must_use]
    pub fn allows(&self, retries: u32) -> bool {
        self.max_retries.is_none_or(|max| retries < max)
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: None,
            delay: Self::DEFAULT_DELAY,
            multiplier: Self::DEFAULT_MULTIPLIER,
            max_delay: Self::DEFAULT_MAX_DELAY,
        }
    }
}

/// What to do with a message whose `action` no handler on the queue serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnknownAction {
    /// Move it to the queue's dead-letter queue (the default).
    #[default]
    DeadLetter,
    /// Acknowledge and drop it, with a log line.
    Drop,
}

/// Defaults for every consumed queue; each [`ConsumeChannel`](crate::ConsumeChannel) may override them.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// Deliveries in flight (and handlers running) at once per queue.
    pub prefetch: u16,
    /// Whether queues and exchanges survive a broker restart.
    pub durable: bool,
    /// Bodies larger than this many bytes are dead-lettered unread.
    pub max_message_size: usize,
    /// What to do with unknown actions.
    pub unknown_action: UnknownAction,
    /// Suffix of the dead-letter queue: `<queue><suffix>`.
    pub dead_letter_suffix: String,
}

impl QueueConfig {
    /// Default prefetch window.
    pub const DEFAULT_PREFETCH: u16 = 10;
    /// Default size limit of a message body (16 MiB).
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
    /// Default dead-letter queue suffix.
    pub const DEFAULT_DEAD_LETTER_SUFFIX: &'static str = ".dlq";

    /// Sets the prefetch window (1 handles messages strictly one by one, in order).
    #[must_use]
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Sets whether queues and exchanges are durable.
    #[must_use]
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets the largest body accepted.
    #[must_use]
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Sets what happens to unknown actions.
    #[must_use]
    pub fn with_unknown_action(mut self, policy: UnknownAction) -> Self {
        self.unknown_action = policy;
        self
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefetch: Self::DEFAULT_PREFETCH,
            durable: true,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            unknown_action: UnknownAction::default(),
            dead_letter_suffix: Self::DEFAULT_DEAD_LETTER_SUFFIX.to_owned(),
        }
    }
}

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
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Close the publishing channel (and the connection, when nothing consumes) after this long unused.
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_cap() {
        let r = RetryConfig::default()
            .with_delay(Duration::from_millis(100))
            .with_multiplier(3.0)
            .with_max_delay(Duration::from_millis(1000));
        assert_eq!(r.delay_for(1), Duration::from_millis(100));
        assert_eq!(r.delay_for(2), Duration::from_millis(300));
        assert_eq!(r.delay_for(3), Duration::from_millis(900));
        assert_eq!(r.delay_for(4), Duration::from_millis(1000));
        assert_eq!(r.delay_for(400), Duration::from_millis(1000));
    }

    #[test]
    fn max_retries_bounds_attempts() {
        let r = RetryConfig::default().with_max_retries(2);
        assert!(r.allows(0) && r.allows(1) && !r.allows(2));
        assert!(RetryConfig::default().allows(u32::MAX - 1));
    }
}
