//! [`PublishOptions`]: how one message is published.

use crate::error::Result;
use crate::wire::limits::short;
use crate::wire::properties::TRANSIENT;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, LongString, ShortString};
use std::time::Duration;

/// How one message is published, beyond its exchange, routing key, action and data.
///
/// ```
/// use eventrabbit::PublishOptions;
/// // The same id each time this event is sent: a receiver can recognise a repeat.
/// let options = PublishOptions::new()
///     .message_id("order-17-placed")
///     .header("tenant", "acme")
///     .mandatory();
/// // Urgent, worthless after a minute, and not worth a disk write.
/// let alert = PublishOptions::new()
///     .priority(9)
///     .expiration(std::time::Duration::from_secs(60))
///     .persistent(false)
///     .app_id("billing")
///     .message_type("alert");
/// # let _ = (options, alert);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PublishOptions {
    pub(crate) message_id: Option<String>,
    /// Checked when published: a key over 255 bytes is `Error::InvalidName`, never a panic.
    pub(crate) headers: Vec<(String, AMQPValue)>,
    pub(crate) mandatory: bool,
    pub(crate) priority: Option<u8>,
    pub(crate) expiration: Option<Duration>,
    /// `None`: persistent (delivery mode 2), as every publish.
    pub(crate) persistent: Option<bool>,
    pub(crate) app_id: Option<String>,
    pub(crate) message_type: Option<String>,
}

impl PublishOptions {
    /// A fresh `message_id`, no headers, and mandatory as `Config::mandatory` says.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The message's priority (the `priority` property, 0 to 255): on a priority queue
    /// (`ConsumeChannel::max_priority(n)`) a higher one is delivered before lower ones
    /// waiting; priorities above the queue's maximum count as its maximum. Other queues
    /// ignore it.
    #[must_use]
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// How long the message may wait in a queue (the `expiration` property, whole
    /// milliseconds, rounded up): once it has waited longer the broker drops it, or
    /// dead-letters it where the queue has a dead-letter target. eventrabbit's quorum
    /// queues have one: it reaches `<queue>.dlq` with the broker's reason `expired`, which
    /// redrive reports as the code `broker-expired`. Classic queues are declared as Python
    /// eventrabbit declares them, without one (give it with
    /// `ConsumeChannel::argument("x-dead-letter-exchange", ..)`), so they drop it.
    #[must_use]
    pub fn expiration(mut self, ttl: Duration) -> Self {
        self.expiration = Some(ttl);
        self
    }

    /// Whether the broker writes the message to disk (delivery mode 2, the default) or
    /// keeps it in memory only (`false`: faster, lost if the broker restarts).
    #[must_use]
    pub fn persistent(mut self, persistent: bool) -> Self {
        self.persistent = Some(persistent);
        self
    }

    /// The `app_id` property: which application published it (at most 255 bytes).
    #[must_use]
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// The `type` property (at most 255 bytes). The action stays in the envelope.
    #[must_use]
    pub fn message_type(mut self, kind: impl Into<String>) -> Self {
        self.message_type = Some(kind.into());
        self
    }

    /// Publishes with this `message_id` instead of a fresh uuid (at most 255 bytes): a
    /// message sent again keeps its id, so an inbox recognises it.
    #[must_use]
    pub fn message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Adds a header (a string value). A key over 255 bytes makes the publish fail with
    /// `Error::InvalidName` before anything is sent.
    #[must_use]
    pub fn header(self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.header_value(key, AMQPValue::LongString(LongString::from(value.into())))
    }

    /// Adds a header of any AMQP value (replacing one of the same key).
    #[must_use]
    pub fn header_value(mut self, key: impl Into<String>, value: AMQPValue) -> Self {
        let key = key.into();
        self.headers.retain(|(k, _)| *k != key);
        self.headers.push((key, value));
        self
    }

    /// A message no queue receives is an error (`Error::Unroutable`).
    #[must_use]
    pub fn mandatory(mut self) -> Self {
        self.mandatory = true;
        self
    }
}

impl PublishOptions {
    /// `props` with what these options set beyond the message id and headers: priority,
    /// expiration, persistence, app id and type. A text over 255 bytes is
    /// `Error::InvalidName`.
    pub(crate) fn apply_to(&self, mut props: BasicProperties) -> Result<BasicProperties> {
        if let Some(priority) = self.priority {
            props = props.with_priority(priority);
        }
        if let Some(ttl) = self.expiration {
            // Whole milliseconds, rounded up: a TTL below 1 ms would be 0, "expire at once".
            let ms = ttl.as_nanos().div_ceil(1_000_000);
            props = props.with_expiration(ShortString::from(ms.to_string()));
        }
        if let Some(persistent) = self.persistent {
            props = props.with_delivery_mode(if persistent { 2 } else { TRANSIENT });
        }
        if let Some(app_id) = &self.app_id {
            props = props.with_app_id(short("app id", app_id)?);
        }
        if let Some(kind) = &self.message_type {
            props = props.with_type(short("message type", kind)?);
        }
        Ok(props)
    }
}
