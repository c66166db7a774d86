//! [`AsyncApiDocument`]: an AsyncAPI 3.1 document, as built or as read from a file, and
//! its forms (JSON, YAML, HTML).

use super::compat::{self, BreakingChange};
use super::html;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::fmt;

/// The top-level sections in the order readers expect them (the rest after).
const ORDER: [&str; 7] = [
    "asyncapi",
    "info",
    "defaultContentType",
    "servers",
    "channels",
    "operations",
    "components",
];

/// A document serialized with its sections in [`ORDER`].
struct Ordered<'a>(&'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(map) = self.0.as_object() else {
            return self.0.serialize(serializer);
        };
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for key in ORDER {
            if let Some(v) = map.get(key) {
                out.serialize_entry(key, v)?;
            }
        }
        for (k, v) in map.iter().filter(|(k, _)| !ORDER.contains(&k.as_str())) {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// An AsyncAPI 3.1 document: built by [`AsyncApi`](super::AsyncApi) or read from JSON or
/// YAML (another service's, or an older version of this one's).
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncApiDocument {
    value: Value,
}

/// Why a text is not an AsyncAPI 3.1 document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError(String);

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DocumentError {}

impl AsyncApiDocument {
    pub(crate) fn from_value(value: Value) -> Self {
        Self { value }
    }

    /// Reads a document from JSON or YAML text (JSON is tried first). Fails unless it is
    /// an object with `asyncapi: 3.x`.
    pub fn parse(text: &str) -> Result<Self, DocumentError> {
        let value: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json) => serde_yaml_ng::from_str(text).map_err(|yaml| {
                DocumentError(format!("neither JSON ({json}) nor YAML ({yaml})"))
            })?,
        };
        match value.get("asyncapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.") => Ok(Self { value }),
            Some(v) => Err(DocumentError(format!(
                "AsyncAPI {v} is not supported (3.x is)"
            ))),
            None => Err(DocumentError(
                "not an AsyncAPI document: no `asyncapi` version".into(),
            )),
        }
    }

    /// The document as a JSON value.
    #[must_use]
    pub fn as_value(&self) -> &Value {
        &self.value
    }

    /// The document as pretty-printed JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&Ordered(&self.value)).expect("a JSON value always serializes")
    }

    /// The document as YAML.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(&Ordered(&self.value)).expect("a JSON value always serializes")
    }

    /// The document as one self-contained HTML page (no network needed to view it): every
    /// operation with its action, channel, payload schema and example.
    #[must_use]
    pub fn to_html(&self) -> String {
        html::page(&self.value)
    }

    /// What would break for this document's peers if the service changed to `newer`: an
    /// action no longer received or sent, a received field newly required, a sent field
    /// dropped or made optional, a field whose type changed. Empty when `newer` is
    /// compatible.
    #[must_use]
    pub fn breaking_changes(&self, newer: &AsyncApiDocument) -> Vec<BreakingChange> {
        compat::between_versions(&self.value, &newer.value)
    }

    /// What breaks when this document's service sends to `consumer`: for each action this
    /// one sends and `consumer` receives, a field the consumer requires that is not always
    /// sent, or a field of another type. Empty when they fit.
    #[must_use]
    pub fn mismatches_with(&self, consumer: &AsyncApiDocument) -> Vec<BreakingChange> {
        compat::producer_to_consumer(&self.value, &consumer.value)
    }
}
