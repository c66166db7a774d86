//! What tests inspect: dead letters and published messages.

/// A message that went to a dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The reason code (`not-json`, `invalid-data`, `retries-exhausted`, ...).
    pub code: String,
    /// The reason, in words.
    pub reason: String,
    /// How many times a handler ran on it.
    pub attempts: u32,
    /// The body, as it was received.
    pub body: Vec<u8>,
}

/// A message published to an exchange, as routed by the broker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Published {
    /// The exchange (`""` for the default exchange).
    pub exchange: String,
    /// The routing key.
    pub routing_key: String,
    /// The envelope's action, if the body is an envelope.
    pub action: Option<String>,
    /// The envelope's `data` (or the whole body if it is not an envelope), as JSON.
    pub data: serde_json::Value,
}
