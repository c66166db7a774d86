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
    /// The broker cannot be used as configured, and trying again will not change that:
    /// the user name or password is refused, the virtual host does not exist or may not
    /// be used, the host name does not resolve, or TLS fails (an untrusted certificate, a
    /// plain AMQP port behind `amqps://`). Reported at once, before any connection was
    /// ever made; a connection lost after a successful start is recovered instead.
    #[error("cannot connect to the broker at {url}: {cause}")]
    CannotConnect {
        /// The node's URL, without its password.
        url: String,
        /// What is wrong, in words.
        cause: String,
    },
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
    /// The broker negatively confirmed a publish: it could not take the message for now
    /// (a quorum queue electing a new leader, a full queue with `overflow =
    /// reject-publish`). Weather, not a verdict: [`Error::is_retryable`] is `true`.
    #[error(
        "broker did not take (nacked) the message published to exchange `{exchange}` with routing key `{routing_key}`"
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
    /// Two action patterns served on one queue could both match one action.
    #[error(
        "queue `{queue}` serves two action patterns that can match the same action: `{first}` and `{second}`; make them disjoint or serve them on different queues"
    )]
    OverlappingPatterns {
        /// The queue.
        queue: String,
        /// The first pattern and its handler.
        first: String,
        /// The second pattern and its handler.
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
    /// The broker cancelled a consumer: its queue was deleted, or the queue's node went
    /// away. The consumer declares its topology again and resumes.
    #[error(
        "the broker cancelled the consumer of queue `{queue}` (the queue was deleted, or its node is gone)"
    )]
    Cancelled {
        /// The queue.
        queue: String,
    },
    /// The stream protocol failed (the `rabbitmq_stream` plugin unreachable, a connection
    /// lost while reading a log).
    #[error("stream: {0}")]
    Stream(String),
    /// The service is shutting down.
    #[error("eventrabbit is shut down")]
    Shutdown,
    /// A consumer's task ended without returning (it panicked, or was cancelled).
    #[error("the consumer of queue `{queue}` ended: {reason}")]
    Ended {
        /// The queue.
        queue: String,
        /// Why.
        reason: String,
    },
    /// A redrive stopped before moving every dead letter it was asked to.
    #[error("redriving `{queue}` stopped after moving {moved}: {error}")]
    Redrive {
        /// The queue whose dead letters were being moved back.
        queue: String,
        /// How many were moved before it stopped.
        moved: usize,
        /// Why it stopped.
        error: String,
    },
    /// A queue cannot be declared as configured (e.g. a quorum queue that is exclusive).
    #[error("queue `{queue}` cannot be declared as configured: {reason}")]
    InvalidQueue {
        /// The queue.
        queue: String,
        /// What is wrong.
        reason: String,
    },
    /// A handler takes a [`State<T>`](crate::State) whose type was never registered: its
    /// queue does not start.
    #[error(
        "handler `{handler}` of queue `{queue}` takes `State<{state}>`, but no state of type `{state}` is registered: add it with `Config::with_state` (or `TestBroker::with_state`)"
    )]
    MissingState {
        /// The queue.
        queue: String,
        /// The handler's path.
        handler: String,
        /// The state's type.
        state: String,
    },
    /// A name longer than AMQP allows (255 bytes): nothing was sent.
    #[error("{what} `{name}` is {len} bytes long; AMQP allows at most 255")]
    InvalidName {
        /// What the name names (`exchange`, `queue`, `routing key`, ...).
        what: &'static str,
        /// The name, shortened.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A delayed publish the broker cannot hold for that long: nothing was sent.
    #[error("cannot publish after {delay:?}: {reason}")]
    InvalidDelay {
        /// The delay asked for.
        delay: std::time::Duration,
        /// Why not.
        reason: String,
    },
    /// A message, or its properties and headers, larger than the broker takes: nothing
    /// was sent.
    #[error("{what} of {size} bytes exceed the limit of {limit} bytes")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of trouble an [`Error`] is: whether trying again can help. This is the one
/// place that decides it: the publisher, the consumer's retry and dead-letter path, the
/// outbox relay, redrive and the stream reader all ask [`Error::is_retryable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Weather: the broker could not be reached, the connection or channel dropped, a
    /// deadline passed, the broker blocked publishing (flow control, an alarm), a queue's
    /// node is down or its leader is changing, or the broker nacked a publish. The same
    /// operation may succeed later: retry it with backoff until your deadline.
    Transient,
    /// The broker refused this very operation (no such exchange, a declaration that
    /// conflicts with an existing one, access refused, an unroutable mandatory message):
    /// it fails again until someone changes the broker's state.
    Refused,
    /// The request itself is wrong (a bad URL or name, data that does not serialize, a
    /// handler set naming unknown actions, an error sent back by a remote handler):
    /// trying again never helps.
    Permanent,
}

impl Error {
    pub(crate) fn amqp(op: impl Into<String>) -> impl FnOnce(lapin::Error) -> Error {
        let op = op.into();
        move |source| Error::Amqp { op, source }
    }

    /// What kind of trouble this is: whether trying again can help.
    ///
    /// ```
    /// use eventrabbit::{Error, ErrorKind};
    /// let e = Error::NoSuchExchange("orders".into());
    /// assert_eq!(e.kind(), ErrorKind::Refused);
    /// ```
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Connection(source) | Error::Amqp { source, .. } => lapin_kind(source),
            Error::Unavailable(..)
            | Error::Blocked { .. }
            | Error::Timeout { .. }
            | Error::ReplyLost { .. }
            | Error::Cancelled { .. }
            | Error::Nacked { .. }
            | Error::Stream(_)
            | Error::Shutdown => ErrorKind::Transient,
            Error::Unroutable { .. } | Error::NoSuchExchange(_) | Error::CannotConnect { .. } => {
                ErrorKind::Refused
            }
            Error::InvalidUrl(_)
            | Error::NoRuntime
            | Error::DuplicateAction { .. }
            | Error::OverlappingPatterns { .. }
            | Error::UnknownAction { .. }
            | Error::NotAnObject { .. }
            | Error::NotInitialized(_)
            | Error::Remote { .. }
            | Error::BadReply { .. }
            | Error::Redrive { .. }
            | Error::Ended { .. }
            | Error::InvalidQueue { .. }
            | Error::MissingState { .. }
            | Error::InvalidName { .. }
            | Error::InvalidDelay { .. }
            | Error::TooLarge { .. } => ErrorKind::Permanent,
        }
    }

    /// Whether the same operation may succeed if tried again later.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        self.kind() == ErrorKind::Transient
    }

    /// Whether to try again (with backoff, until the caller's deadline): the error is
    /// weather ([`ErrorKind::Transient`]: a nack, flow control, a lost connection or
    /// channel, a leader change, a timeout), not a refusal of this very message.
    ///
    /// ```
    /// use eventrabbit::Error;
    /// let nack = Error::Nacked { exchange: "orders".into(), routing_key: "".into() };
    /// assert!(nack.is_retryable());
    /// assert!(!Error::NoSuchExchange("orders".into()).is_retryable());
    /// ```
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        self.is_transient()
    }

    /// Whether the broker refused to consume a queue because another consumer has it
    /// exclusively (a partition another instance holds).
    pub(crate) fn is_exclusive_use(&self) -> bool {
        use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
        match self {
            Error::Connection(source) | Error::Amqp { source, .. } => matches!(
                source.kind(),
                lapin::ErrorKind::ProtocolError(amqp)
                    if amqp.kind() == &AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)
                        && amqp.get_message().as_str().contains("exclusive use")
            ),
            _ => false,
        }
    }

    /// Whether the broker refused the operation itself.
    #[must_use]
    pub fn is_refused(&self) -> bool {
        self.kind() == ErrorKind::Refused
    }
}

/// A lapin error's kind. A channel-level protocol error is the broker refusing the
/// operation, but for a queue whose node is down or whose process is restarting (RabbitMQ
/// says `NOT_FOUND` with "home node .. down or inaccessible", or "process is stopped by
/// supervisor"): that passes when the node or a new leader is back. A connection-level
/// one means the connection is gone and a new one may do better (but for `NOT_ALLOWED`:
/// no access to the virtual host). Everything else (I/O, missed heartbeats, a closed
/// channel or connection) is transient, but for errors no reconnection can fix.
fn lapin_kind(e: &lapin::Error) -> ErrorKind {
    use lapin::ErrorKind as K;
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    match e.kind() {
        K::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
                if node_away(amqp.get_message().as_str()) =>
            {
                ErrorKind::Transient
            }
            AMQPErrorKind::Soft(_) | AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => {
                ErrorKind::Refused
            }
            AMQPErrorKind::Hard(_) => ErrorKind::Transient,
        },
        K::ChannelsLimitReached | K::InvalidProtocolVersion(_) | K::AuthProviderError(_) => {
            ErrorKind::Refused
        }
        K::ParsingError(_) | K::SerialisationError(_) | K::NoDefaultRuntime => ErrorKind::Permanent,
        _ => ErrorKind::Transient,
    }
}

/// Why a first connection attempt failed for a reason no retry fixes (a refused login,
/// a missing virtual host, a host name that does not resolve, a TLS failure), in words;
/// `None` for weather (a closed port, a timeout, a dropped connection).
pub(crate) fn start_failure(e: &lapin::Error, user: &str, vhost: &str) -> Option<String> {
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    if let lapin::ErrorKind::ProtocolError(amqp) = e.kind() {
        return match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => Some(format!(
                "access refused for user `{user}` (wrong user name or password, or the user may not log in): {}",
                amqp.get_message()
            )),
            AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED) => Some(format!(
                "virtual host `{vhost}` does not exist or user `{user}` may not use it: {}",
                amqp.get_message()
            )),
            _ => None,
        };
    }
    let text = e.to_string();
    if text.contains("failed to lookup address") || text.contains("Name or service not known") {
        return Some(format!("the host name does not resolve: {text}"));
    }
    let tls = [
        "certificate",
        "Certificate",
        "InvalidContentType",
        "corrupt message",
        "handshake",
        "HandshakeFailure",
        "tls",
        "TLS",
    ];
    if tls.iter().any(|t| text.contains(t)) {
        return Some(format!(
            "the TLS handshake failed (an untrusted or wrong certificate, or a plain AMQP port behind amqps://): {text}"
        ));
    }
    None
}

/// Whether a broker's `NOT_FOUND` text says that the queue exists but its node or process
/// is away for now (not that the queue or exchange is missing).
fn node_away(text: &str) -> bool {
    text.contains("down or inaccessible") || text.contains("stopped by supervisor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::protocol::{AMQPError, AMQPErrorKind, AMQPHardError, AMQPSoftError};

    fn protocol(kind: AMQPErrorKind, text: &str) -> Error {
        let amqp = AMQPError::new(kind, text.into());
        Error::Amqp {
            op: "publishing".into(),
            source: lapin::ErrorKind::ProtocolError(amqp).into(),
        }
    }

    #[test]
    fn weather_is_retryable_and_refusals_are_not() {
        let nack = Error::Nacked {
            exchange: "x".into(),
            routing_key: "k".into(),
        };
        assert!(nack.is_retryable());
        let home_down = protocol(
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND),
            "NOT_FOUND - home node 'rabbit@n1' of durable queue 'q' in vhost '/' is down or inaccessible",
        );
        assert!(home_down.is_retryable(), "{home_down}");
        let no_exchange = protocol(
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND),
            "NOT_FOUND - no exchange 'x' in vhost '/'",
        );
        assert_eq!(no_exchange.kind(), ErrorKind::Refused);
        let access = protocol(
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED),
            "ACCESS_REFUSED - access to exchange 'x' refused",
        );
        assert!(!access.is_retryable());
        let forced = protocol(
            AMQPErrorKind::Hard(AMQPHardError::CONNECTIONFORCED),
            "CONNECTION_FORCED - broker forced connection closure",
        );
        assert!(forced.is_retryable());
        assert!(
            !Error::TooLarge {
                what: "body",
                size: 2,
                limit: 1
            }
            .is_retryable()
        );
        assert!(
            Error::Blocked {
                exchange: "x".into(),
                reason: "low on memory".into(),
                waited: Duration::ZERO
            }
            .is_retryable()
        );
    }
}
