//! Events as written to and read from an event store.

use crate::handler::context::MessageContext;
use crate::telemetry::trace::handler_trace;
use serde::Serialize;
use std::time::SystemTime;

/// The version a stream must be at for an append to go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Whatever the stream holds.
    Any,
    /// Exactly this many events (`0`: the stream does not exist yet).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream at `actual` satisfies it.
    #[must_use]
    pub fn admits(self, actual: u64) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(v) => v == actual,
        }
    }
}

impl std::fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("any"),
            Self::Exact(v) => write!(f, "{v}"),
        }
    }
}

/// Where an event comes from: its message id, what caused it, the conversation it is part
/// of and its trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    /// The AMQP `message_id` the event is published with (a fresh one by default).
    pub message_id: String,
    /// The message id of the command or event that caused it.
    pub causation_id: Option<String>,
    /// The id shared by every message of one conversation.
    pub correlation_id: Option<String>,
    /// The W3C `traceparent` the event continues.
    pub traceparent: Option<String>,
}

/// What caused a command: carried into the metadata of every event it appends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Causation {
    causation_id: Option<String>,
    correlation_id: Option<String>,
    traceparent: Option<String>,
}

impl Causation {
    /// Nothing known; inside a handler, the handler's trace.
    #[must_use]
    pub fn new() -> Self {
        Self {
            traceparent: current_traceparent(),
            ..Self::default()
        }
    }

    /// Caused by the message a handler is handling: its message id is the causation id,
    /// its correlation id (or else its message id) the correlation id, its trace the trace.
    #[must_use]
    pub fn from_message(ctx: &MessageContext) -> Self {
        let message_id = ctx.message_id().map(str::to_owned);
        Self {
            correlation_id: ctx
                .correlation_id()
                .map(str::to_owned)
                .or_else(|| message_id.clone()),
            causation_id: message_id,
            traceparent: current_traceparent().or_else(|| ctx.header_str("traceparent")),
        }
    }

    /// With this correlation id.
    #[must_use]
    pub fn correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    /// With this causation id.
    #[must_use]
    pub fn causation_id(mut self, id: impl Into<String>) -> Self {
        self.causation_id = Some(id.into());
        self
    }

    /// The metadata of one new event so caused, with a fresh message id.
    #[must_use]
    pub fn metadata(&self) -> Metadata {
        Metadata {
            message_id: fresh_message_id(),
            causation_id: self.causation_id.clone(),
            correlation_id: self.correlation_id.clone(),
            traceparent: self.traceparent.clone(),
        }
    }
}

fn current_traceparent() -> Option<String> {
    handler_trace().map(|t| String::from_utf8_lossy(&t.header_value()).into_owned())
}

/// A message id as eventrabbit makes them: a uuid in its 32-digit form.
pub(crate) fn fresh_message_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// An event to append: an action, its `data` (a JSON object) and its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub(crate) action: String,
    pub(crate) data: serde_json::Value,
    pub(crate) metadata: Metadata,
}

impl NewEvent {
    /// `data` under `action`, with a fresh message id. `data` must serialize to a JSON
    /// object.
    pub fn new<T: Serialize + ?Sized>(
        action: impl Into<String>,
        data: &T,
    ) -> Result<Self, super::StoreError> {
        let action = action.into();
        let data = serde_json::to_value(data).map_err(|e| super::StoreError::NotAnEnvelope {
            reason: format!("`data` of `{action}` did not serialize: {e}"),
        })?;
        Self::from_json(action, data)
    }

    /// An event as its envelope `{"action": .., "data": {..}}`: what an enum with
    /// `#[serde(tag = "action", content = "data")]` serializes to.
    pub fn from_envelope<T: Serialize + ?Sized>(event: &T) -> Result<Self, super::StoreError> {
        let value = serde_json::to_value(event).map_err(|e| super::StoreError::NotAnEnvelope {
            reason: format!("the event did not serialize: {e}"),
        })?;
        let serde_json::Value::Object(mut map) = value else {
            return Err(super::StoreError::NotAnEnvelope {
                reason: "the event did not serialize to an object `{\"action\", \"data\"}` \
                         (tag the enum with #[serde(tag = \"action\", content = \"data\")])"
                    .to_owned(),
            });
        };
        let action = match map.remove("action") {
            Some(serde_json::Value::String(action)) => action,
            _ => {
                return Err(super::StoreError::NotAnEnvelope {
                    reason: "the event has no string `action` (tag the enum with \
                             #[serde(tag = \"action\", content = \"data\")])"
                        .to_owned(),
                });
            }
        };
        // A unit variant has no `data`: it is sent as an empty object.
        let data = map
            .remove("data")
            .unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        Self::from_json(action, data)
    }

    fn from_json(action: String, data: serde_json::Value) -> Result<Self, super::StoreError> {
        if !data.is_object() {
            return Err(super::StoreError::NotAnEnvelope {
                reason: format!("`data` of `{action}` must be a JSON object"),
            });
        }
        Ok(Self {
            action,
            data,
            metadata: Metadata {
                message_id: fresh_message_id(),
                ..Metadata::default()
            },
        })
    }

    /// With this metadata (its message id included).
    #[must_use]
    pub fn metadata(mut self, metadata: Metadata) -> Self {
        self.metadata = metadata;
        self
    }

    /// The action.
    #[must_use]
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The `data` object.
    #[must_use]
    pub fn data(&self) -> &serde_json::Value {
        &self.data
    }

    /// Its metadata.
    #[must_use]
    pub fn meta(&self) -> &Metadata {
        &self.metadata
    }
}

/// An event as stored: where it is in its stream and in the store, what it says, and
/// when it was recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// The stream (an aggregate's id) it belongs to.
    pub stream: String,
    /// Its place in the stream: 1 for the first event.
    pub version: u64,
    /// Its place in the whole store: increasing with every append, with gaps.
    pub position: u64,
    /// The action, as in the envelope.
    pub action: String,
    /// The version of the shape of `data` (see [`Upcasters`](super::Upcasters)): after
    /// reading, the current one.
    pub revision: u32,
    /// The envelope's `data`.
    pub data: serde_json::Value,
    /// Message id, causation and correlation ids, trace.
    pub metadata: Metadata,
    /// When it was appended.
    pub recorded_at: SystemTime,
}

impl RecordedEvent {
    /// The envelope `{"action": .., "data": {..}}`, as published.
    #[must_use]
    pub fn envelope(&self) -> serde_json::Value {
        serde_json::json!({ "action": self.action, "data": self.data })
    }

    /// The event as `T`, read from its envelope (an enum tagged with
    /// `#[serde(tag = "action", content = "data")]`, or any type reading `{"action", "data"}`).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, super::StoreError> {
        serde_json::from_value(self.envelope()).map_err(|e| super::StoreError::Decode {
            stream: self.stream.clone(),
            version: self.version,
            action: self.action.clone(),
            reason: e.to_string(),
        })
    }
}
