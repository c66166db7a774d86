//! A reader's view of a document's operations, for the HTML page: what each one receives
//! or sends, where, its payload and reply shapes and examples.

use super::ids::deref;
use serde_json::Value;

/// One operation, as the page shows it.
#[derive(Debug)]
pub(crate) struct Operation<'a> {
    pub(crate) id: String,
    /// The operation object itself (bindings, extensions).
    pub(crate) operation: &'a Value,
    pub(crate) action: String,
    pub(crate) receive: bool,
    /// The channel's title (or address).
    pub(crate) channel: String,
    /// The channel object (address, bindings, description).
    pub(crate) channel_value: Option<&'a Value>,
    pub(crate) summary: String,
    /// The first message (headers, correlation id, description).
    pub(crate) message: Option<&'a Value>,
    /// The first message of the reply.
    pub(crate) reply_message: Option<&'a Value>,
    pub(crate) data: Option<&'a Value>,
    pub(crate) example: Option<&'a Value>,
    pub(crate) reply: Option<&'a Value>,
    pub(crate) reply_example: Option<&'a Value>,
}

/// The first message of a list of message references.
fn first_message<'a>(doc: &'a Value, list: Option<&'a Value>) -> Option<&'a Value> {
    let first = list?.as_array()?.first()?;
    Some(deref(doc, first))
}

fn data_of(message: &Value) -> Option<&Value> {
    let payload = message.get("payload")?;
    Some(payload.pointer("/properties/data").unwrap_or(payload))
}

fn example_of(message: &Value) -> Option<&Value> {
    message.pointer("/examples/0/payload")
}

/// Every operation of `doc`, in key order.
pub(crate) fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let Some(ops) = doc.get("operations").and_then(Value::as_object) else {
        return Vec::new();
    };
    ops.iter()
        .map(|(id, op)| {
            let op = deref(doc, op);
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
            let channel_value = op.get("channel").map(|c| deref(doc, c));
            let channel = channel_value
                .and_then(|c| c.get("title").or_else(|| c.get("address")))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let message = first_message(doc, op.get("messages"));
            let reply = op
                .get("reply")
                .and_then(|r| first_message(doc, deref(doc, r).get("messages")));
            let action = message
                .and_then(|m| m.get("name"))
                .or_else(|| op.get("title"))
                .map(|v| text(Some(v)))
                .unwrap_or_else(|| id.clone());
            Operation {
                id: id.clone(),
                operation: op,
                action,
                receive: op.get("action").and_then(Value::as_str) == Some("receive"),
                channel,
                channel_value,
                summary: text(op.get("summary")),
                message,
                reply_message: reply,
                data: message.and_then(data_of),
                example: message.and_then(example_of),
                reply: reply.and_then(data_of),
                reply_example: reply.and_then(example_of),
            }
        })
        .collect()
}
