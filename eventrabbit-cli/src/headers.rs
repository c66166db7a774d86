//! Message headers as people and scripts read them: every AMQP value decoded (tables and
//! arrays such as the broker's `x-death` as JSON, byte arrays as text), times as RFC 3339.

use chrono::{DateTime, SecondsFormat};
use lapin::types::{AMQPValue, FieldTable};
use serde_json::{Map, Value, json};

/// A header value as JSON. `key` tells times apart: an AMQP timestamp is one, and so is an
/// integer under a key ending in `time` (eventrabbit's `x-first-failure-time`, in ms).
pub(crate) fn to_json(key: &str, value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => number_or_time(key, i64::from(*n)),
        AMQPValue::LongUInt(n) => number_or_time(key, i64::from(*n)),
        AMQPValue::LongLongInt(n) => number_or_time(key, *n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => {
            json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(b) => json!(String::from_utf8_lossy(b.as_slice())),
        AMQPValue::Timestamp(secs) => json!(rfc3339_ms(
            i64::try_from(*secs)
                .unwrap_or(i64::MAX)
                .saturating_mul(1000)
        )),
        AMQPValue::FieldArray(items) => Value::Array(
            items
                .as_slice()
                .iter()
                .map(|item| to_json(key, item))
                .collect(),
        ),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::Void => Value::Null,
    }
}

/// A table (all of a message's headers, or one `x-death` entry) as a JSON object.
pub(crate) fn table_json(table: &FieldTable) -> Value {
    let mut object = Map::new();
    for (k, v) in table.inner() {
        object.insert(k.to_string(), to_json(k.as_str(), v));
    }
    Value::Object(object)
}

/// A header value as one line of text: strings as they are, anything else as compact JSON.
pub(crate) fn to_text(key: &str, value: &AMQPValue) -> String {
    match to_json(key, value) {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn number_or_time(key: &str, n: i64) -> Value {
    if key.ends_with("time") && n > 0 {
        json!(rfc3339_ms(n))
    } else {
        json!(n)
    }
}

/// Milliseconds since the epoch as RFC 3339 in UTC (`2026-12-07T05:17:31.123Z`).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{FieldArray, LongString, ShortString};

    #[test]
    fn x_death_and_times_read_as_text() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("expired")),
        );
        death.insert("time".into(), AMQPValue::Timestamp(1_765_084_651));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(
                LongString::from("q"),
            )])),
        );
        let x_death = AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)]));
        assert_eq!(
            to_json("x-death", &x_death),
            json!([{"count": 1, "reason": "expired", "time": "2025-12-07T05:17:31.000Z", "routing-keys": ["q"]}])
        );
        assert_eq!(
            to_text(
                "x-first-failure-time",
                &AMQPValue::LongLongInt(1_765_084_651_123)
            ),
            "2025-12-07T05:17:31.123Z"
        );
        assert_eq!(to_text("x-attempts", &AMQPValue::LongLongInt(3)), "3");
        assert_eq!(
            to_text("k", &AMQPValue::ShortString(ShortString::from("v"))),
            "v"
        );
        assert_eq!(
            to_text("k", &AMQPValue::ByteArray(b"bytes".to_vec().into())),
            "bytes"
        );
    }
}
