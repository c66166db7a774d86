//! [`ConsumeChannel`]: which queue to consume, and how it is declared and bound.

use super::binding::{Binding, ExchangeKind};
use super::{QueueConfig, RetryConfig, UnknownAction};
use crate::error::Result;
use crate::wire::limits::check_name;

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
    pub(crate) actions: Option<Vec<String>>,
    pub(crate) retry: Option<RetryConfig>,
    pub(crate) unknown_action: Option<UnknownAction>,
    pub(crate) max_message_size: Option<usize>,
}

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
            actions: None,
            retry: None,
            unknown_action: None,
            max_message_size: None,
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

    /// Serves only these actions on this queue (each must have a registered handler).
    #[must_use]
    pub fn actions<I, S>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.actions = Some(actions.into_iter().map(Into::into).collect());
        self
    }

    /// Overrides the retry policy for this queue.
    #[must_use]
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Overrides what happens to unknown actions on this queue.
    #[must_use]
    pub fn unknown_action(mut self, policy: UnknownAction) -> Self {
        self.unknown_action = Some(policy);
        self
    }

    /// Overrides the size limit for this queue.
    #[must_use]
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
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
        Resolved {
            // 0 would mean "unlimited" to the broker: never, whatever the configuration says.
            prefetch: self.prefetch.unwrap_or(defaults.prefetch).max(1),
            durable,
            exchange_durable: self
                .exchange_durable
                .or(defaults.exchange_durable)
                .unwrap_or(durable),
            max_message_size: self.max_message_size.unwrap_or(defaults.max_message_size),
            unknown_action: self.unknown_action.unwrap_or(defaults.unknown_action),
            retry: self.retry.clone().unwrap_or_else(|| retry.clone()),
            dead_letter_queue: format!("{}{}", self.queue, defaults.dead_letter_suffix),
        }
    }
}

impl ConsumeChannel {
    /// Fails unless every name this queue needs fits in AMQP's 255 bytes: the queue, its
    /// dead-letter queue, its longest retry wait queue, each exchange, key and header.
    pub(crate) fn check_names(&self, settings: &Resolved) -> Result<()> {
        check_name("queue", &self.queue)?;
        check_name("dead-letter queue", &settings.dead_letter_queue)?;
        check_name(
            "retry wait queue",
            &format!(
                "{}.retry.{}ms",
                self.queue,
                settings.retry.delay_for(u32::MAX).as_millis()
            ),
        )?;
        for b in &self.bindings {
            check_name("exchange", &b.exchange)?;
            check_name("binding key", &b.routing_key)?;
            for key in b.arguments.inner().keys() {
                check_name("binding header", key.as_str())?;
            }
        }
        Ok(())
    }
}

/// A channel's settings after defaults are applied.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) prefetch: u16,
    pub(crate) durable: bool,
    pub(crate) exchange_durable: bool,
    pub(crate) max_message_size: usize,
    pub(crate) unknown_action: UnknownAction,
    pub(crate) retry: RetryConfig,
    pub(crate) dead_letter_queue: String,
}
