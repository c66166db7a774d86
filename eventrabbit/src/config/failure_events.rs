//! [`FailureEvents`]: announcing messages that failed for good.

/// Publish an event when a message is dead-lettered for good, so other services can
/// react (compensate, alert, show the user). Off unless set, on a queue
/// ([`ConsumeChannel::failure_events`](crate::ConsumeChannel::failure_events)) or for every
/// queue ([`QueueConfig::with_failure_events`](crate::QueueConfig::with_failure_events)).
///
/// The event is an ordinary envelope, action `<ACTION>_FAILED` (the suffix is
/// configurable), published with confirms to `exchange` with the event's action as
/// routing key (unless [`routing_key`](Self::routing_key) says otherwise):
///
/// ```json
/// {"action": "ORDER_PLACED_FAILED",
///  "data": {"action": "ORDER_PLACED", "data": {"order_id": 7},
///           "code": "retries-exhausted", "reason": "action `ORDER_PLACED` failed 4 times; ..",
///           "attempts": 4, "queue": "billing", "message_id": "6f1c.."}}
/// ```
///
/// ```
/// use eventrabbit::{ConsumeChannel, FailureEvents};
/// let channel = ConsumeChannel::new("billing")
///     .failure_events(FailureEvents::to("failures").suffix(".failed"));
/// # let _ = channel;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureEvents {
    pub(crate) exchange: String,
    pub(crate) suffix: String,
    pub(crate) routing_key: Option<String>,
}

impl FailureEvents {
    /// The suffix appended to the failed message's action by default.
    pub const DEFAULT_SUFFIX: &'static str = "_FAILED";

    /// Publishes failure events to `exchange` (which must exist; `""` is the default
    /// exchange, where the routing key names a queue).
    #[must_use]
    pub fn to(exchange: impl Into<String>) -> Self {
        Self {
            exchange: exchange.into(),
            suffix: Self::DEFAULT_SUFFIX.to_owned(),
            routing_key: None,
        }
    }

    /// The suffix of the event's action (`_FAILED` by default).
    #[must_use]
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// A fixed routing key for every failure event (by default, the event's action).
    #[must_use]
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = Some(key.into());
        self
    }

    /// The exchange failure events go to.
    #[must_use]
    pub fn exchange(&self) -> &str {
        &self.exchange
    }
}
