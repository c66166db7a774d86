//! A message read from a stream, as the pipeline sees a delivery: its body, its AMQP
//! 0-9-1 properties and headers as they were published, and its offset.

use crate::handler::context::Message;
use crate::wire::limits::{self, short_lossy};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use rabbitmq_stream_protocol::codec::Encoder;
use rabbitmq_stream_protocol::message::{
    AnnonationKey, Message as StreamMessage, SimpleValue, Value,
};
use std::sync::Arc;

/// Reads stream deliveries into the pipeline's messages, remembering the last creation
/// time it converted: events published in a burst share their (whole-second) timestamp,
/// and the codec keeps its value private, so it is read from the message's encoding
/// ([`amqp1`](super::amqp1)) only when it changes.
#[derive(Debug, Default)]
pub(crate) struct Reader {
    /// The last creation time converted (as `SimpleValue::Timestamp`: the codec does not
    /// export the type by name), and its seconds.
    last_time: Option<(SimpleValue, Option<u64>)>,
}

impl Reader {
    /// The pipeline's message for the stream message `m` at `offset`, read by the
    /// consumer labelled `queue`.
    pub(crate) fn message(&mut self, queue: &Arc<str>, offset: u64, m: &StreamMessage) -> Message {
        let mut props = BasicProperties::default();
        if let Some(p) = m.properties() {
            // Another service wrote these: an AMQP 0-9-1 short string takes 255 bytes at
            // most, so longer ones are cut (never a panic).
            if let Some(id) = p.message_id.as_ref().and_then(id_text) {
                props = props.with_message_id(short_lossy(&id));
            }
            if let Some(id) = p.correlation_id.as_ref().and_then(id_text) {
                props = props.with_correlation_id(short_lossy(&id));
            }
            if let Some(reply_to) = &p.reply_to {
                props = props.with_reply_to(short_lossy(reply_to));
            }
            if let Some(ct) = &p.content_type {
                props = props.with_content_type(short_lossy(ct));
            }
            if let Some(secs) = p.creation_time.as_ref().and_then(|t| self.seconds(t, m)) {
                props = props.with_timestamp(secs);
            }
        }
        let (mut exchange, mut routing_key) = (ShortString::from(""), ShortString::from(""));
        if let Some(annotations) = m.message_annotations() {
            for (key, value) in annotations.iter() {
                let (AnnonationKey::Symbol(key), Some(text)) = (key, value_text(value)) else {
                    continue;
                };
                match key.as_str() {
                    "x-exchange" => exchange = short_lossy(text),
                    "x-routing-key" => routing_key = short_lossy(text),
                    _ => {}
                }
            }
        }
        if let Some(app) = m.application_properties() {
            let mut headers = FieldTable::default();
            for (k, v) in app.iter() {
                // A key over 255 bytes cannot be an AMQP 0-9-1 header: left out.
                if let (Ok(k), Some(v)) = (limits::short("header key", k), simple_value(v)) {
                    headers.insert(k, v);
                }
            }
            props = props.with_headers(headers);
        }
        Message {
            queue: queue.clone(),
            exchange,
            routing_key,
            redelivered: false,
            offset: Some(offset),
            properties: props,
            body: m.data().map(<[u8]>::to_vec).unwrap_or_default(),
        }
    }

    /// `time`, the creation time of `message`, in whole seconds since the epoch.
    fn seconds<T>(&mut self, time: &T, message: &StreamMessage) -> Option<u64>
    where
        T: Clone + Into<SimpleValue>,
        for<'a> &'a T: TryFrom<&'a SimpleValue>,
        T: PartialEq,
    {
        if let Some((last, secs)) = &self.last_time
            && <&T>::try_from(last).is_ok_and(|last| last == time)
        {
            return *secs;
        }
        let mut encoded = Vec::with_capacity(message.encoded_size() as usize);
        let secs = message
            .encode(&mut encoded)
            .ok()
            .and_then(|()| super::amqp1::creation_time_ms(&encoded))
            .and_then(|ms| u64::try_from(ms.div_euclid(1000)).ok());
        self.last_time = Some((time.clone().into(), secs));
        secs
    }
}

/// A message id or correlation id as text: a string as it is, a number in decimal, a
/// uuid hyphenated, bytes as UTF-8.
fn id_text<Id>(id: &Id) -> Option<String>
where
    for<'a> &'a String: TryFrom<&'a Id>,
    for<'a> &'a u64: TryFrom<&'a Id>,
    for<'a> &'a i64: TryFrom<&'a Id>,
    for<'a> &'a uuid::Uuid: TryFrom<&'a Id>,
    for<'a> &'a Vec<u8>: TryFrom<&'a Id>,
{
    if let Ok(s) = <&String>::try_from(id) {
        return Some(s.clone());
    }
    if let Ok(n) = <&u64>::try_from(id) {
        return Some(n.to_string());
    }
    if let Ok(n) = <&i64>::try_from(id) {
        return Some(n.to_string());
    }
    if let Ok(u) = <&uuid::Uuid>::try_from(id) {
        return Some(u.hyphenated().to_string());
    }
    <&Vec<u8>>::try_from(id)
        .ok()
        .and_then(|b| String::from_utf8(b.clone()).ok())
}

fn value_text(v: &Value) -> Option<&str> {
    match v {
        Value::Simple(SimpleValue::String(s)) => Some(s),
        Value::Simple(SimpleValue::Symbol(s)) => Some(s.as_str()),
        _ => None,
    }
}

/// An application property as an AMQP 0-9-1 header value.
fn simple_value(v: &SimpleValue) -> Option<AMQPValue> {
    Some(match v {
        SimpleValue::Boolean(b) => AMQPValue::Boolean(*b),
        SimpleValue::Ubyte(n) => AMQPValue::ShortShortUInt(*n),
        SimpleValue::Ushort(n) => AMQPValue::ShortUInt(*n),
        SimpleValue::Uint(n) => AMQPValue::LongUInt(*n),
        SimpleValue::Ulong(n) => AMQPValue::LongLongInt(i64::try_from(*n).unwrap_or(i64::MAX)),
        SimpleValue::Byte(n) => AMQPValue::ShortShortInt(*n),
        SimpleValue::Short(n) => AMQPValue::ShortInt(*n),
        SimpleValue::Int(n) => AMQPValue::LongInt(*n),
        SimpleValue::Long(n) => AMQPValue::LongLongInt(*n),
        SimpleValue::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        SimpleValue::Symbol(s) => AMQPValue::LongString(LongString::from(s.as_str())),
        SimpleValue::Binary(b) => AMQPValue::LongString(LongString::from(b.to_vec())),
        _ => return None,
    })
}
