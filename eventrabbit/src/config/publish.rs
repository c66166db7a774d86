//! [`PublishOptions`]: how one message is published.

use lapin::types::{AMQPValue, LongString};

/// How one message is published, beyond its exchange, routing key, action and data.
///
/// ```
/// use eventrabbit::PublishOptions;
/// // The same id each time this event is sent: a receiver can recognise a repeat.
/// let options = PublishOptions::new()
///     .message_id("order-17-placed")
///     .header("tenant", "acme")
///     .mandatory();
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct PublishOptions {
    pub(crate) message_id: Option<String>,
    /// Checked when published: a key over 255 bytes is `Error::InvalidName`, never a panic.
    pub(crate) headers: Vec<(String, AMQPValue)>,
    pub(crate) mandatory: bool,
}

impl PublishOptions {
    /// A fresh `message_id`, no headers, and mandatory as `Config::mandatory` says.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
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
