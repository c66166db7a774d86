//! [`QueueConfig`]: defaults of every consumed queue.

use super::failure_events::FailureEvents;
use super::queue_kind::QueueType;
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
    /// Whether queues (with their dead-letter and retry wait queues) survive a broker
    /// restart.
    pub durable: bool,
    /// Whether exchanges survive a broker restart; `None`: as the queue. (Python
    /// eventrabbit declares its exchanges non-durable and its queues durable.)
    pub exchange_durable: Option<bool>,
    /// Bodies larger than this many bytes are dead-lettered unread.
    pub max_message_size: usize,
    /// What to do with unknown actions.
    pub unknown_action: UnknownAction,
    /// Suffix of the dead-letter queue: `<queue><suffix>`.
    pub dead_letter_suffix: String,
    /// The type of consumed queues (classic by default).
    pub queue_type: QueueType,
    /// Events announcing messages dead-lettered for good (off by default).
    pub failure_events: Option<FailureEvents>,
}

impl QueueConfig {
    /// Default prefetch window.
    pub const DEFAULT_PREFETCH: u16 = 10;
    /// Default size limit of a message body (16 MiB).
    pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
    /// Default dead-letter queue suffix.
    pub const DEFAULT_DEAD_LETTER_SUFFIX: &'static str = ".dlq";

    /// Announces every message dead-lettered for good on any queue (see [`FailureEvents`]).
    #[must_use]
    pub fn with_failure_events(mut self, events: FailureEvents) -> Self {
        self.failure_events = Some(events);
        self
    }

    /// Sets the prefetch window (1 handles messages strictly one by one, in order).
    #[must_use]
    pub fn with_prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// Sets whether queues are durable (and exchanges too, unless
    /// [`with_exchange_durable`](Self::with_exchange_durable) says otherwise).
    #[must_use]
    pub fn with_durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// Sets the type of consumed queues (e.g. all quorum, on a cluster).
    #[must_use]
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Sets whether exchanges are durable, apart from queues.
    #[must_use]
    pub fn with_exchange_durable(mut self, durable: bool) -> Self {
        self.exchange_durable = Some(durable);
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
            exchange_durable: None,
            max_message_size: Self::DEFAULT_MAX_MESSAGE_SIZE,
            unknown_action: UnknownAction::default(),
            dead_letter_suffix: Self::DEFAULT_DEAD_LETTER_SUFFIX.to_owned(),
            queue_type: QueueType::default(),
            failure_events: None,
        }
    }
}
