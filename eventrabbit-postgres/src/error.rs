//! The crate's error type.

/// What can go wrong with the outbox, the relay or the inbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database refused or could not be reached.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Publishing to RabbitMQ failed.
    #[error("publishing: {0}")]
    Publish(#[from] eventrabbit::Error),
    /// Data did not serialize to, or a stored reply did not decode from, JSON.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `data` must be a JSON object (the envelope's `data`).
    #[error("data for action `{0}` must serialize to a JSON object")]
    NotAnObject(String),
    /// A schema name that is not a plain SQL identifier.
    #[error(
        "`{0}` is not a valid schema name (letters, digits and `_`, not starting with a digit)"
    )]
    InvalidSchema(String),
    /// The event store refused or failed (a conflict names the stream and versions).
    #[error(transparent)]
    Store(#[from] eventrabbit::sourcing::StoreError),
    /// A message without a `message_id` cannot be recognised when it comes again.
    #[error("the message has no message_id: the inbox cannot recognise it when it comes again")]
    NoMessageId,
}

/// In a handler: a refusal of the message itself (not an event of the store, an event
/// that does not read, data that is not an object, no message id) is dead-lettered at
/// once with the reason; the database, the broker and conflicts are retried.
impl eventrabbit::HandlerError for Error {
    fn is_permanent(&self) -> bool {
        match self {
            Error::Store(e) => !e.is_transient(),
            Error::NotAnObject(_) | Error::NoMessageId | Error::Json(_) => true,
            _ => false,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whether the database may succeed if asked again later: it could not be reached, the
/// pool had no connection in time, or it asked to retry (serialization failure,
/// deadlock, shutting down, too many connections).
pub(crate) fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(
                    &*code,
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                )
        }),
        _ => false,
    }
}
