//! [`Binding`]: an exchange a queue is bound to, and how.

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
    /// Routes each message to one bound queue, chosen by a hash of its routing key (or of
    /// a header or property, see [`Binding::hash_on_header`]), queues weighted by their
    /// binding key (`x-consistent-hash`, the broker's `rabbitmq_consistent_hash_exchange`
    /// plugin). [`Partitions`](crate::Partitions) declares one.
    ConsistentHash,
}

impl ExchangeKind {
    pub(crate) fn to_lapin(self) -> lapin::ExchangeKind {
        match self {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Headers => lapin::ExchangeKind::Headers,
            ExchangeKind::ConsistentHash => lapin::ExchangeKind::Custom("x-consistent-hash".into()),
        }
    }
}

/// An exchange a queue is bound to, declared with it: the exchange's kind and the
/// binding's routing key (a pattern for topic exchanges) or header arguments. One value,
/// so a key can never be given to a binding that does not exist yet.
///
/// ```
/// use eventrabbit::{Binding, ConsumeChannel};
/// let channel = ConsumeChannel::new("audit")
///     .bind(Binding::topic("users", "user.*.created"))
///     .bind(Binding::topic("users", "user.*.deleted"))
///     .bind(Binding::headers("billing").header("region", "eu").match_any());
/// # let _ = channel;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    pub(crate) exchange: String,
    pub(crate) kind: ExchangeKind,
    pub(crate) routing_key: String,
    pub(crate) arguments: FieldTable,
    /// A header key over 255 bytes, refused when the queue is consumed (never a panic).
    pub(crate) long_key: Option<String>,
    pub(crate) durable: Option<bool>,
    /// Arguments the exchange is declared with.
    pub(crate) exchange_arguments: FieldTable,
}

impl Binding {
    /// A binding to `exchange` of `kind` with routing key `""` (for a direct exchange,
    /// the queue's name is used instead).
    #[must_use]
    pub fn new(exchange: impl Into<String>, kind: ExchangeKind) -> Self {
        Self {
            exchange: exchange.into(),
            kind,
            routing_key: String::new(),
            arguments: FieldTable::default(),
            long_key: None,
            durable: None,
            exchange_arguments: FieldTable::default(),
        }
    }

    /// A fanout exchange: every message.
    #[must_use]
    pub fn fanout(exchange: impl Into<String>) -> Self {
        Self::new(exchange, ExchangeKind::Fanout)
    }

    /// A direct exchange: messages published with routing key `key`.
    #[must_use]
    pub fn direct(exchange: impl Into<String>, key: impl Into<String>) -> Self {
        Self::new(exchange, ExchangeKind::Direct).routing_key(key)
    }

    /// A topic exchange: messages whose routing key matches `pattern` (`*` one word,
    /// `#` any number of words).
    #[must_use]
    pub fn topic(exchange: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self::new(exchange, ExchangeKind::Topic).routing_key(pattern)
    }

    /// A headers exchange: messages whose headers match those given with
    /// [`Binding::header`] (all of them, or any with [`Binding::match_any`]).
    #[must_use]
    pub fn headers(exchange: impl Into<String>) -> Self {
        Self::new(exchange, ExchangeKind::Headers)
    }

    /// A consistent-hash exchange ([`ExchangeKind::ConsistentHash`]) binding the queue with
    /// weight 1.
    #[must_use]
    pub fn consistent_hash(exchange: impl Into<String>) -> Self {
        Self::new(exchange, ExchangeKind::ConsistentHash).routing_key("1")
    }

    /// For a consistent-hash exchange: hash the value of header `name` instead of the
    /// routing key (the exchange's `hash-header` argument).
    #[must_use]
    pub fn hash_on_header(mut self, name: impl Into<String>) -> Self {
        self.exchange_arguments.insert(
            "hash-header".into(),
            AMQPValue::LongString(name.into().into()),
        );
        self
    }

    /// For a consistent-hash exchange: hash the message id instead of the routing key
    /// (the exchange's `hash-property` argument).
    #[must_use]
    pub fn hash_on_message_id(mut self) -> Self {
        self.exchange_arguments.insert(
            "hash-property".into(),
            AMQPValue::LongString("message_id".into()),
        );
        self
    }

    /// The binding's routing key (or pattern, for topic exchanges).
    #[must_use]
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.routing_key = key.into();
        self
    }

    /// A header to match, for headers exchanges.
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        match ShortString::try_new(key.as_str()) {
            Ok(short) => {
                self.arguments
                    .insert(short, AMQPValue::LongString(value.into().into()));
            }
            Err(_) => self.long_key = Some(key),
        }
        self
    }

    /// For headers exchanges: route when any one header matches instead of all.
    #[must_use]
    pub fn match_any(mut self) -> Self {
        self.arguments
            .insert("x-match".into(), AMQPValue::LongString("any".into()));
        self
    }

    /// Whether the exchange is declared durable (by default as the consumed queue's
    /// exchanges are: see [`ConsumeChannel::exchange_durable`](crate::ConsumeChannel::exchange_durable)).
    #[must_use]
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = Some(durable);
        self
    }

    /// The exchange's name.
    #[must_use]
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// The routing key the queue is bound with (the queue's name for a direct exchange
    /// given none).
    pub(crate) fn key_for<'a>(&'a self, queue: &'a str) -> &'a str {
        if self.routing_key.is_empty() && self.kind == ExchangeKind::Direct {
            queue
        } else {
            &self.routing_key
        }
    }
}
