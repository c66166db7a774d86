//! What AMQP can carry, checked before anything is sent: names are short strings (at most
//! 255 bytes), a message's properties must fit in one frame, and the texts eventrabbit
//! writes into headers are bounded, so nothing a message or a caller holds can make the
//! library send a frame the broker must reject (which closes the whole connection).

use crate::error::{Error, Result};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

/// RabbitMQ's default `frame_max`: assumed until a connection says otherwise, and what
/// the test broker enforces.
pub(crate) const DEFAULT_FRAME_MAX: usize = 131_072;

/// The longest name (exchange, queue, routing key, header key) AMQP carries.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// The most bytes of text eventrabbit writes into one header (an error, a reason).
pub(crate) const MAX_HEADER_TEXT: usize = 4096;

/// The most bytes of an action name or a field path quoted in a reason.
pub(crate) const MAX_QUOTED: usize = 256;

/// Bytes of a content header frame besides the properties: frame type, channel and size
/// (7), class, weight and body size (12), property flags (2) and the frame end (1).
const CONTENT_HEADER_OVERHEAD: usize = 22;

/// Fails unless `name` fits in an AMQP short string.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.len() <= MAX_NAME_LEN {
        return Ok(());
    }
    Err(Error::InvalidName {
        what,
        name: cap(name, 64).into_owned(),
        len: name.len(),
    })
}

/// `name` as an AMQP short string, or [`Error::InvalidName`] if it is over 255 bytes
/// (`ShortString::from` panics on those).
pub(crate) fn short(what: &'static str, name: &str) -> Result<ShortString> {
    check_name(what, name)?;
    Ok(ShortString::from(name))
}

/// `text` as an AMQP short string, cut to 255 bytes on a character boundary: for strings
/// another service sent (a stream event's ids and annotations), which must never panic.
pub(crate) fn short_lossy(text: &str) -> ShortString {
    let mut end = text.len().min(MAX_NAME_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    ShortString::from(&text[..end])
}

/// `text` cut to at most `max` bytes on a character boundary, saying how much was cut.
pub(crate) fn cap(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max.saturating_sub(32).min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end).into()
}

/// Fails unless `properties` fit in one content header frame of `frame_max` bytes.
pub(crate) fn check_properties(properties: &BasicProperties, frame_max: usize) -> Result<()> {
    let size = properties_size(properties);
    if size + CONTENT_HEADER_OVERHEAD <= frame_max {
        return Ok(());
    }
    Err(Error::TooLarge {
        what: "message properties and headers",
        size,
        limit: frame_max.saturating_sub(CONTENT_HEADER_OVERHEAD),
    })
}

/// The encoded size of `properties`, as AMQP 0-9-1 writes them.
pub(crate) fn properties_size(p: &BasicProperties) -> usize {
    let short =
        |s: &Option<lapin::types::ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    short(p.content_type())
        + short(p.content_encoding())
        + p.headers().as_ref().map_or(0, table_size)
        + p.delivery_mode().map_or(0, |_| 1)
        + p.priority().map_or(0, |_| 1)
        + short(p.correlation_id())
        + short(p.reply_to())
        + short(p.expiration())
        + short(p.message_id())
        + p.timestamp().map_or(0, |_| 8)
        + short(p.kind())
        + short(p.user_id())
        + short(p.app_id())
        + short(p.cluster_id())
}

/// The encoded size of a field table: its length prefix, then each key and value.
pub(crate) fn table_size(table: &FieldTable) -> usize {
    4 + table
        .inner()
        .iter()
        .map(|(k, v)| 1 + k.as_str().len() + 1 + value_size(v))
        .sum::<usize>()
}

/// The encoded size of a field value, without its type tag.
pub(crate) fn value_size(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::Boolean(_) | AMQPValue::ShortShortInt(_) | AMQPValue::ShortShortUInt(_) => 1,
        AMQPValue::ShortInt(_) | AMQPValue::ShortUInt(_) => 2,
        AMQPValue::LongInt(_) | AMQPValue::LongUInt(_) | AMQPValue::Float(_) => 4,
        AMQPValue::LongLongInt(_) | AMQPValue::Double(_) | AMQPValue::Timestamp(_) => 8,
        AMQPValue::DecimalValue(_) => 5,
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
        AMQPValue::FieldArray(a) => {
            4 + a
                .as_slice()
                .iter()
                .map(|v| 1 + value_size(v))
                .sum::<usize>()
        }
        AMQPValue::FieldTable(t) => table_size(t),
        AMQPValue::ByteArray(b) => 4 + b.as_slice().len(),
        AMQPValue::Void => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::LongString;

    /// The size we compute is the size lapin writes.
    #[test]
    fn properties_size_matches_the_encoding() {
        let mut inner = FieldTable::default();
        inner.insert("n".into(), AMQPValue::LongLongInt(1));
        let mut headers = FieldTable::default();
        headers.insert("a".into(), AMQPValue::LongString(LongString::from("hello")));
        headers.insert("b".into(), AMQPValue::ShortString(ShortString::from("x")));
        headers.insert("c".into(), AMQPValue::Boolean(true));
        headers.insert("d".into(), AMQPValue::FieldTable(inner));
        headers.insert(
            "e".into(),
            AMQPValue::FieldArray(vec![AMQPValue::LongInt(3), AMQPValue::Void].into()),
        );
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2)
            .with_message_id("id-1".into())
            .with_correlation_id("c".into())
            .with_timestamp(7)
            .with_headers(headers);
        let frame = amq_protocol::frame::AMQPFrame::Header(
            1,
            amq_protocol::frame::AMQPContentHeader {
                class_id: 60,
                body_size: 10,
                properties: props.clone(),
            },
        );
        let written = amq_protocol::frame::gen_frame(&frame)(
            amq_protocol::frame::WriteContext::from(Vec::new()),
        )
        .expect("a header frame encodes");
        assert_eq!(
            written.write.len(),
            CONTENT_HEADER_OVERHEAD + properties_size(&props)
        );
    }

    #[test]
    fn caps_on_a_char_boundary() {
        let text = "é".repeat(5000);
        let capped = cap(&text, MAX_HEADER_TEXT);
        assert!(capped.len() <= MAX_HEADER_TEXT, "{}", capped.len());
        assert!(capped.ends_with("bytes cut)"));
        assert_eq!(cap("short", 10), "short");
    }

    #[test]
    fn short_strings_never_panic() {
        for len in [0, 255, 256, 65_536] {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            assert!(short_lossy(&text).as_str().len() <= MAX_NAME_LEN);
            assert_eq!(
                short("header key", &text).is_ok(),
                text.len() <= MAX_NAME_LEN
            );
        }
    }

    #[test]
    fn names_over_255_bytes_are_refused() {
        assert!(check_name("queue", &"q".repeat(255)).is_ok());
        let e = check_name("queue", &"q".repeat(256)).unwrap_err();
        assert!(e.to_string().contains("256 bytes"), "{e}");
    }
}
