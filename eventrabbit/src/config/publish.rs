//! [`PublishOptions`]: how one message is published.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

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
    pub(crate) headers: Option<FieldTable>,
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

    /// Adds a header (a string value).
    #[must_use]
    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.get_or_insert_with(FieldTable::default).insert(
            ShortString::from(key.into()),
            AMQPValue::LongString(LongString::from(value.into())),
        );
        self
    }

    /// Adds a header of any AMQP value.
    #[must_use]
    pub fn header_value(mut self, key: impl Into<String>, value: AMQPValue) -> Self {
        self.headers
            .get_or_insert_with(FieldTable::default)
            .insert(ShortString::from(key.into()), value);
        self
    }

    /// A message no queue receives is an error (`Error::Unroutable`).
    #[must_use]
    pub fn mandatory(mut self) -> Self {
        self.mandatory = true;
        self
    }
}
