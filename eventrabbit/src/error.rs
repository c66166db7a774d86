//! The one error type of the crate.

use std::time::Duration;

/// Everything that can go wrong in eventrabbit. Messages name the queue, exchange,
/// action or field involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The AMQP URL could not be parsed (the URL itself is not repeated: it may hold a password).
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    /// `build_event_dependencies` was called outside a tokio runtime.
    #[error(
        "eventrabbit must be set up inside a tokio runtime (call `build_event_dependencies` from async code run by tokio)"
    )]
    NoRuntime,
    /// The broker could not be reached or the connection failed.
    #[error("broker connection failed: {0}")]
    Connection(#[source] lapin::Error),
    /// The broker was not reachable before the deadline.
    #[error("broker not reachable within {0:?} while {1}")]
    Unavailable(Duration, String),
    /// The broker blocked publishing (memory or disk alarm) for longer than the deadline.
    #[error("broker blocked publishing to exchange `{exchange}` for {waited:?}: {reason}")]
    Blocked {
        /// The exchange being published to.
        exchange: String,
        /// The broker's reason (e.g. `low on memory`).
        reason: String,
        /// How long the publish waited.
        waited: Duration,
    },
    /// An AMQP operation on a queue or exchange failed.
    #[error("{op} failed: {source}")]
    Amqp {
        /// What was being done, naming the queue or exchange.
        op: String,
        /// The underlying lapin error.
        #[source]
        source: lapin::Error,
    },
    /// The broker refused (negatively confirmed) a publish.
    #[error(
        "broker refused the message published to exchange `{exchange}` with routing key `{routing_key}`"
    )]
    Nacked {
        /// The exchange published to (`""` is the default exchange).
        exchange: String,
        /// The routing key used.
        routing_key: String,
    },
    /// A mandatory publish could not be routed to any queue.
    #[error(
        "no queue is bound to exchange `{exchange}` for routing key `{routing_key}` (message returned: {reply_text})"
    )]
    Unroutable {
        /// The exchange published to.
        exchange: String,
        /// The routing key used.
        routing_key: String,
        /// The broker's explanation.
        reply_text: String,
    },
    /// A publish named an exchange that does not exist (test broker; RabbitMQ reports it
    /// as an [`Error::Amqp`] `NOT_FOUND`).
    #[error("exchange `{0}` does not exist")]
    NoSuchExchange(String),
    /// The same action is registered by two handlers.
    #[error("action `{action}` is registered twice: by `{first}` and by `{second}`")]
    DuplicateAction {
        /// The action.
        action: String,
        /// The first handler's path.
        first: String,
        /// The second handler's path.
        second: String,
    },
    /// A queue was told to serve an action no handler is registered for.
    #[error(
        "queue `{queue}` is told to serve action `{action}`, but no handler is registered for it"
    )]
    UnknownAction {
        /// The queue.
        queue: String,
        /// The action.
        action: String,
    },
    /// A value to publish did not serialize to a JSON object.
    #[error("data for action `{action}` must serialize to a JSON object: {reason}")]
    NotAnObject {
        /// The action being published.
        action: String,
        /// What it serialized to, or the serialization error.
        reason: String,
    },
    /// A producer ran before `build_event_dependencies` set up the connection.
    #[error("no connection for producer of action `{0}`: call `build_event_dependencies` first")]
    NotInitialized(String),
    /// An RPC call got no reply in time.
    #[error("no reply to `{action}` from `{target}` within {timeout:?}")]
    Timeout {
        /// The queue or exchange called.
        target: String,
        /// The action called.
        action: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// An RPC call was answered with an error by the remote handler.
    #[error("`{action}` on `{target}` failed remotely: {message}")]
    Remote {
        /// The queue or exchange called.
        target: String,
        /// The action called.
        action: String,
        /// The error message sent back.
        message: String,
    },
    /// A reply could not be decoded into the expected type.
    #[error("reply to `{action}` could not be decoded: {reason}")]
    BadReply {
        /// The action called.
        action: String,
        /// Why decoding failed, naming the field.
        reason: String,
    },
    /// The connection closed while an RPC call was waiting.
    #[error("connection lost while waiting for the reply to `{action}`")]
    ReplyLost {
        /// The action called.
        action: String,
    },
    /// The service is shutting down.
    #[error("eventrabbit is shut down")]
    Shutdown,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn amqp(op: impl Into<String>) -> impl FnOnce(lapin::Error) -> Error {
        let op = op.into();
        move |source| Error::Amqp { op, source }
    }
}
