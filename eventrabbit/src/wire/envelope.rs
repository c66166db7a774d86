//! The wire format: `{"action": .., "data": {..}}` envelopes and RPC replies.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::ops::Range;

/// Why an incoming body is not a valid envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    NotUtf8(String),
    NotJson(String),
    NotObject,
    /// An object naming `action` or `data` twice (which one wins is anybody's guess).
    DuplicateKey(String),
    MissingAction,
    DataNotObject,
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvelopeError::NotUtf8(e) => write!(f, "body is not UTF-8: {e}"),
            EnvelopeError::NotJson(e) => write!(f, "body is not JSON: {e}"),
            EnvelopeError::NotObject => f.write_str("body is not a JSON object"),
            EnvelopeError::DuplicateKey(e) => write!(f, "body is ambiguous: {e}"),
            EnvelopeError::MissingAction => f.write_str("body has no string `action`"),
            EnvelopeError::DataNotObject => f.write_str("`data` is missing or not a JSON object"),
        }
    }
}

/// A decoded envelope borrowing from the body: the action and where `data` sits in it.
#[derive(Debug)]
pub(crate) struct Envelope<'a> {
    pub(crate) action: Cow<'a, str>,
    pub(crate) data: Range<usize>,
}

/// The common case: a string `action` and an object `data`, read in one pass.
#[derive(Deserialize)]
struct Usual<'a> {
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Any JSON object, its `action` and `data` still unread: for telling what is wrong.
#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Parses an envelope without copying `data`.
pub(crate) fn decode(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    // serde_json does not check the UTF-8 of what it skips (keys other than `action` and
    // `data`), and the wire contract is UTF-8 JSON: check the whole body first.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(EnvelopeError::NotUtf8(e.to_string()));
    }
    if let Ok(usual) = serde_json::from_slice::<Usual<'_>>(body)
        && usual.data.get().starts_with('{')
    {
        return Ok(Envelope {
            action: usual.action,
            data: range_in(body, usual.data),
        });
    }
    classify(body)
}

/// Decodes what the usual case did not take, or says why it is not an envelope.
fn classify(body: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let raw: RawEnvelope<'_> = match serde_json::from_slice(body) {
        Ok(raw) => raw,
        Err(e) => {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                    // Valid JSON that is an object fails here only by naming a field twice.
                    Ok(_) if body.trim_ascii_start().starts_with(b"{") => {
                        EnvelopeError::DuplicateKey(strip_position(&e.to_string()))
                    }
                    Ok(_) => EnvelopeError::NotObject,
                    Err(_) => EnvelopeError::NotJson(e.to_string()),
                },
            );
        }
    };
    let action = raw
        .action
        .and_then(|a| serde_json::from_str::<Cow<'_, str>>(a.get()).ok())
        .ok_or(EnvelopeError::MissingAction)?;
    let data = raw.data.ok_or(EnvelopeError::DataNotObject)?;
    if !data.get().starts_with('{') {
        return Err(EnvelopeError::DataNotObject);
    }
    Ok(Envelope {
        action,
        data: range_in(body, data),
    })
}

/// A serde_json error message without its ` at line L column C` suffix.
pub(crate) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// Where `value`, borrowed from `body`, sits in it.
fn range_in(body: &[u8], value: &RawValue) -> Range<usize> {
    let text = value.get();
    let start = text.as_ptr() as usize - body.as_ptr() as usize;
    start..start + text.len()
}

/// `{"action": action, "data": value}` in one pass, checking that `value` serializes
/// to a JSON object.
pub(crate) fn encode_envelope<T: Serialize + ?Sized>(
    action: &str,
    value: &T,
) -> crate::error::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Out<'a, T: ?Sized> {
        action: &'a str,
        data: &'a T,
    }
    let not_object = |reason: String| crate::error::Error::NotAnObject {
        action: action.to_owned(),
        reason,
    };
    let body = serde_json::to_vec(&Out {
        action,
        data: value,
    })
    .map_err(|e| not_object(e.to_string()))?;
    // `{"action":<action>,"data":` comes first; `data` starts right after it.
    let plain = action
        .bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f);
    let action_len = if plain {
        action.len() + 2
    } else {
        serde_json::to_string(action).map_or(0, |a| a.len())
    };
    let start = r#"{"action":,"data":"#.len() + action_len;
    if body.get(start) != Some(&b'{') {
        let data = body
            .get(start..body.len().saturating_sub(1))
            .unwrap_or_default();
        return Err(not_object(format!(
            "got `{}`",
            truncate(&String::from_utf8_lossy(data), 64)
        )));
    }
    Ok(body)
}

/// `{"action": action, "data": data}` as bytes; `data` is already JSON.
pub(crate) fn encode(action: &str, data: &RawValue) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        action: &'a str,
        data: &'a RawValue,
    }
    serde_json::to_vec(&Out { action, data }).expect("strings and raw JSON always serialize")
}

/// An RPC reply: `{"data": ..}` on success, `{"data": null, "error": {"message": ..}}` on
/// failure (`data` is always there: Python eventrabbit's reply model requires it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplyBody<'a> {
    #[serde(borrow, default)]
    pub(crate) data: Option<&'a RawValue>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<ReplyError>,
}

/// The error half of an RPC reply.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReplyError {
    pub(crate) message: String,
}

pub(crate) fn encode_reply(data: Option<&RawValue>) -> Vec<u8> {
    let null = RawValue::NULL;
    serde_json::to_vec(&ReplyBody {
        data: Some(data.unwrap_or(null)),
        error: None,
    })
    .expect("raw JSON always serializes")
}

pub(crate) fn encode_error_reply(message: &str) -> Vec<u8> {
    serde_json::to_vec(&ReplyBody {
        data: None,
        error: Some(ReplyError {
            message: message.to_owned(),
        }),
    })
    .expect("strings always serialize")
}

/// Decodes an RPC reply from `target` to `action`: its `data` as `R`, or the remote error.
pub(crate) fn decode_reply<R: DeserializeOwned>(
    target: &str,
    action: &str,
    reply: &[u8],
) -> crate::error::Result<R> {
    let bad = |reason: String| crate::error::Error::BadReply {
        action: action.to_owned(),
        reason,
    };
    let body: ReplyBody<'_> = serde_json::from_slice(reply).map_err(|e| bad(e.to_string()))?;
    if let Some(error) = body.error {
        return Err(crate::error::Error::Remote {
            target: target.to_owned(),
            action: action.to_owned(),
            message: error.message,
        });
    }
    let data = body.data.map(|d| d.get()).unwrap_or("null");
    let mut de = serde_json::Deserializer::from_str(data);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        bad(format!("field `{path}`: {}", e.into_inner()))
    })
}

pub(crate) fn truncate_bytes(b: &[u8], max: usize) -> &[u8] {
    &b[..b.len().min(max)]
}

pub(crate) fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_action_and_data_span() {
        let body = br#"{"action":"A","data":{"x":1}}"#;
        let env = decode(body).unwrap();
        assert_eq!(env.action, "A");
        assert_eq!(&body[env.data], br#"{"x":1}"#);
    }

    #[test]
    fn classifies_bad_bodies() {
        assert!(matches!(decode(b"nope"), Err(EnvelopeError::NotJson(_))));
        assert!(matches!(
            decode(b"\xff\xfe"),
            Err(EnvelopeError::NotUtf8(_))
        ));
        // Invalid UTF-8 where serde_json would not look (a key it skips) or where it
        // would (in `data`) is the same error, never a duplicate key or a handled message.
        assert!(matches!(
            decode(b"{\"action\":\"A\",\"data\":{},\"x\":\"\xff\"}"),
            Err(EnvelopeError::NotUtf8(_))
        ));
        assert!(matches!(
            decode(b"{\"action\":\"A\",\"data\":{\"x\":\"\xff\"}}"),
            Err(EnvelopeError::NotUtf8(_))
        ));
        assert_eq!(decode(b"[1]").unwrap_err(), EnvelopeError::NotObject);
        assert_eq!(
            decode(br#"{"data":{}}"#).unwrap_err(),
            EnvelopeError::MissingAction
        );
        assert_eq!(
            decode(br#"{"action":1,"data":{}}"#).unwrap_err(),
            EnvelopeError::MissingAction
        );
        assert_eq!(
            decode(br#"{"action":"A","data":[]}"#).unwrap_err(),
            EnvelopeError::DataNotObject
        );
        assert_eq!(
            decode(br#"{"action":"A"}"#).unwrap_err(),
            EnvelopeError::DataNotObject
        );
        assert_eq!(
            decode(br#" {"action":"A","data":{},"action":"B"}"#).unwrap_err(),
            EnvelopeError::DuplicateKey("duplicate field `action`".into())
        );
        assert_eq!(
            decode(br#"{"action":"A","data":{},"data":{}}"#).unwrap_err(),
            EnvelopeError::DuplicateKey("duplicate field `data`".into())
        );
        // Other keys may repeat: only `action` and `data` are read.
        assert!(decode(br#"{"action":"A","data":{},"x":1,"x":2}"#).is_ok());
    }

    #[test]
    fn the_usual_path_agrees_with_the_full_classification() {
        let bodies: &[&[u8]] = &[
            br#"{"action":"A","data":{"x":1}}"#,
            br#"{"data":{"x":[1,{"y":"}"}]},"action":"A"}"#,
            br#" { "action" : "A" , "data" : { } , "extra" : [1] } "#,
            br#"{"action":"A\u0042","data":{}}"#,
            br#"{"action":"A","data":{},"action":"B"}"#,
            br#"{"action":null,"data":{}}"#,
            br#"{"action":"A","data":null}"#,
            br#"{"action":"A","data":"{}"}"#,
            br#"{"action":["A"],"data":{}}"#,
            br#"{"action":"A","data":{"x":1}"#,
            br#"{"action":"A","data":{}} trailing"#,
            b"",
            b"null",
        ];
        let view =
            |r: Result<Envelope<'_>, EnvelopeError>| r.map(|e| (e.action.into_owned(), e.data));
        for body in bodies {
            assert_eq!(
                view(decode(body)),
                view(classify(body)),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn escaped_action_is_unescaped() {
        let env = decode(br#"{"action":"A\u0042","data":{}}"#).unwrap();
        assert_eq!(env.action, "AB");
    }

    #[test]
    fn encodes_envelope_and_replies() {
        let body = encode_envelope("A\"b", &serde_json::json!({"x": 1})).unwrap();
        assert_eq!(body, br#"{"action":"A\"b","data":{"x":1}}"#);
        let err = encode_envelope("A", &5).unwrap_err().to_string();
        assert!(err.contains("got `5`"), "{err}");
        assert!(encode_envelope("A", &[1]).is_err());
        assert!(encode_envelope("A", &()).is_err());
        assert_eq!(encode_reply(None), br#"{"data":null}"#);
        assert_eq!(
            encode_error_reply("boom"),
            br#"{"data":null,"error":{"message":"boom"}}"#
        );
    }
}
