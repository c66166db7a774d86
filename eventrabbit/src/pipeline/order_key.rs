//! The key a keyed consumer orders a message by ([`OrderKey`]).

use crate::config::OrderKey;
use crate::handler::context::Message;
use crate::wire::{envelope, headers};
use serde_json::Value;
use std::collections::HashMap;

/// The message's key; `""` when it has none (one lane for all such messages).
pub(crate) fn key_of(by: &OrderKey, message: &Message) -> String {
    match by {
        OrderKey::RoutingKey => message.routing_key.to_string(),
        OrderKey::Header(name) => message
            .headers()
            .and_then(|h| h.inner().get(name.as_str()))
            .and_then(headers::header_text)
            .unwrap_or_default(),
        OrderKey::Field(path) => field_of(&message.body, path).unwrap_or_default(),
    }
}

/// The value at `path` (dot-separated) in the envelope's `data`: a string as is, any other
/// value as its JSON text.
fn field_of(body: &[u8], path: &str) -> Option<String> {
    let env = envelope::decode(body).ok()?;
    let data = body.get(env.data)?;
    let mut segments = path.split('.');
    let first = segments.next()?;
    // Only the objects on the path are read into maps; the rest stays unparsed.
    let mut at: HashMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(data).ok()?;
    let mut value = at.remove(first)?;
    for segment in segments {
        at = serde_json::from_str(value.get()).ok()?;
        value = at.remove(segment)?;
    }
    match serde_json::from_str::<Value>(value.get()).ok()? {
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_data_by_path() {
        let body = br#"{"action":"A","data":{"id":"k1","n":42,"c":{"id":7},"x":null}}"#;
        assert_eq!(field_of(body, "id").as_deref(), Some("k1"));
        assert_eq!(field_of(body, "n").as_deref(), Some("42"));
        assert_eq!(field_of(body, "c.id").as_deref(), Some("7"));
        assert_eq!(field_of(body, "x").as_deref(), Some("null"));
        assert_eq!(field_of(body, "missing"), None);
        assert_eq!(field_of(body, "id.deeper"), None);
        assert_eq!(field_of(b"not json", "id"), None);
        assert_eq!(
            field_of(
                "{\"action\":\"A\",\"data\":{\"\u{e9}\":\"\u{1F600}\"}}".as_bytes(),
                "\u{e9}"
            )
            .as_deref(),
            Some("\u{1F600}")
        );
    }
}
