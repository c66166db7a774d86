//! What a handler may learn about the delivery it is handling.

use crate::config::state::{State, StateMap};
use crate::wire::headers;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use std::sync::Arc;

/// One delivery as received, shared between the runner and the handler.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) queue: Arc<str>,
    pub(crate) exchange: ShortString,
    pub(crate) routing_key: ShortString,
    pub(crate) redelivered: bool,
    /// Its offset, when it comes from an event log (a stream).
    pub(crate) offset: Option<u64>,
    pub(crate) properties: BasicProperties,
    pub(crate) body: Vec<u8>,
}

impl Message {
    pub(crate) fn headers(&self) -> Option<&FieldTable> {
        self.properties.headers().as_ref()
    }

    pub(crate) fn retry_count(&self) -> u32 {
        headers::retry_count(self.headers())
    }
}

/// The delivery's context, given to a handler parameter of this type.
///
/// ```no_run
/// use eventrabbit::{MessageContext, consumer};
///
/// #[consumer(action = "PING")]
/// async fn ping(ctx: MessageContext) {
///     println!("{:?} try {}", ctx.message_id(), ctx.retry_count())
/// }
/// # fn main() {}
/// ```
#[derive(Debug, Clone)]
pub struct MessageContext {
    pub(crate) message: Arc<Message>,
    pub(crate) state: StateMap,
}

impl MessageContext {
    /// The action of the message, as sent: for a handler of a pattern (`"USER_*"`), the
    /// action that matched it.
    #[must_use]
    pub fn action(&self) -> String {
        crate::wire::envelope::decode(&self.message.body)
            .map(|e| e.action.into_owned())
            .unwrap_or_default()
    }

    /// The `message_id` property, if the publisher set one.
    #[must_use]
    pub fn message_id(&self) -> Option<&str> {
        self.message
            .properties
            .message_id()
            .as_ref()
            .map(|s| s.as_str())
    }

    /// The `correlation_id` property (set on RPC requests).
    #[must_use]
    pub fn correlation_id(&self) -> Option<&str> {
        self.message
            .properties
            .correlation_id()
            .as_ref()
            .map(|s| s.as_str())
    }

    /// The `reply_to` property (set on RPC requests).
    #[must_use]
    pub fn reply_to(&self) -> Option<&str> {
        self.message
            .properties
            .reply_to()
            .as_ref()
            .map(|s| s.as_str())
    }

    /// The message headers.
    #[must_use]
    pub fn headers(&self) -> Option<&FieldTable> {
        self.message.headers()
    }

    /// A header's value as text, when it is a string or an integer.
    #[must_use]
    pub fn header_str(&self, key: &str) -> Option<String> {
        match self.headers()?.inner().get(key)? {
            AMQPValue::Boolean(_) => None,
            other => headers::header_text(other),
        }
    }

    /// Whether the broker delivered this message before (it was not acknowledged then).
    #[must_use]
    pub fn redelivered(&self) -> bool {
        self.message.redelivered
    }

    /// How many times this message has been retried after a failure (0 on the first attempt).
    #[must_use]
    pub fn retry_count(&self) -> u32 {
        self.message.retry_count()
    }

    /// The event's offset in its log, when it was read from an event log (a stream).
    #[must_use]
    pub fn stream_offset(&self) -> Option<u64> {
        self.message.offset
    }

    /// When the message was published, if its publisher said (the `timestamp` property,
    /// which eventrabbit sets on everything it publishes; whole seconds).
    #[must_use]
    pub fn timestamp(&self) -> Option<std::time::SystemTime> {
        let secs = (*self.message.properties.timestamp())?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    /// The queue the message was consumed from (for an event log: `<log>#<consumer name>`).
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.message.queue
    }

    /// The exchange the message was published to (`""` for the default exchange).
    #[must_use]
    pub fn exchange(&self) -> &str {
        self.message.exchange.as_str()
    }

    /// The routing key the message was published with.
    #[must_use]
    pub fn routing_key(&self) -> &str {
        self.message.routing_key.as_str()
    }

    /// The application state of type `T` registered with
    /// [`Config::with_state`](crate::Config::with_state), for middleware (handlers take a
    /// [`State<T>`] parameter instead).
    #[must_use]
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        self.state.get::<T>()
    }
}
