//! [`ConsumeChannel`]: which queue to consume, and how it is declared and bound.

use super::{QueueConfig, RetryConfig, UnknownAction};
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// The kind of an exchange, deciding how it routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExchangeKind {
    /// Routes by exact routing key.
    Direct,
    /// Routes to every bound queue.
    Fanout,
    /// Routes by routing-key pattern (`*` one word, `#` any words).
    Topic,
    /// Routes by header values (binding arguments).
    Headers,
}

impl ExchangeKind {
    pub(crate) fn to_lapin(self) -> lapin::ExchangeKind {
        match self {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Headers => lapin::ExchangeKind::Headers,
        }
    }
}

/// An exchange the queue is bound to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Binding {
    pub(crate) exchange: String,
    pub(crate) kind: ExchangeKind,
    pub(crate) routing_key: String,
    pub(crate) arguments: FieldTable,
}

/// One queue to consume. Without an exchange it consumes from the queue alone (fed
/// through the default exchange); with one, the exchange is declared and the queue bound.
///
/// ```
/// use eventrabbit::{ConsumeChannel, ExchangeKind};
/// let channel = ConsumeChannel::new("calendar_user_sync")
///     .exchange("PROFILE_FANOUT_EXCHANGE", ExchangeKind::Fanout)
///     .prefetch(20);
/// # let _ = channel;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumeChannel {
    pub(crate) queue: String,
    pub(crate) binding: Option<Binding>,
    pub(crate) prefetch: Option<u16>,
    pub(crate) durable: Option<bool>,
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
            binding: None,
            prefetch: None,
            durable: None,
            exclusive: false,
            auto_delete: false,
            actions: None,
            retry: None,
            unknown_action: None,
            max_message_size: None,
        }
    }

    /// Declares `exchange` of `kind` and binds the queue to it.
    #[must_use]
    pub fn exchange(mut self, exchange: impl Into<String>, kind: ExchangeKind) -> Self {
        self.binding = Some(Binding {
            exchange: exchange.into(),
            kind,
            routing_key: String::new(),
            arguments: FieldTable::default(),
        });
        self
    }

    /// The binding's routing key (or pattern, for topic exchanges). Defaults to `""`;
    /// with a direct exchange and no key, the queue's name is used.
    #[must_use]
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        if let Some(b) = self.binding.as_mut() {
            b.routing_key = key.into();
        }
        self
    }

    /// Adds a header to match, for headers exchanges (all must match unless [`Self::match_any`]).
    #[must_use]
    pub fn bind_header(mut self, key: &str, value: impl Into<String>) -> Self {
        if let Some(b) = self.binding.as_mut() {
            b.arguments.insert(
                ShortString::from(key),
                AMQPValue::LongString(value.into().into()),
            );
        }
        self
    }

    /// For headers exchanges: route when any one header matches instead of all.
    #[must_use]
    pub fn match_any(mut self) -> Self {
        if let Some(b) = self.binding.as_mut() {
            b.arguments
                .insert("x-match".into(), AMQPValue::LongString("any".into()));
        }
        self
    }

    /// Deliveries (and handlers) in flight at once; 1 handles messages one by one, in order.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = Some(prefetch.max(1));
        self
    }

    /// Whether the queue (and exchange) survive a broker restart.
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
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

    pub(crate) fn resolve(&self, defaults: &QueueConfig, retry: &RetryConfig) -> Resolved {
        Resolved {
            prefetch: self.prefetch.unwrap_or(defaults.prefetch),
            durable: self.durable.unwrap_or(defaults.durable),
            max_message_size: self.max_message_size.unwrap_or(defaults.max_message_size),
            unknown_action: self.unknown_action.unwrap_or(defaults.unknown_action),
            retry: self.retry.clone().unwrap_or_else(|| retry.clone()),
            dead_letter_queue: format!("{}{}", self.queue, defaults.dead_letter_suffix),
        }
    }
}

/// A channel's settings after defaults are applied.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) prefetch: u16,
    pub(crate) durable: bool,
    pub(crate) max_message_size: usize,
    pub(crate) unknown_action: UnknownAction,
    pub(crate) retry: RetryConfig,
    pub(crate) dead_letter_queue: String,
}
