//! The message objects: the `{"action": .., "data": ..}` envelope around a payload's
//! schema, RPC replies, and the headers eventrabbit reads and writes.

use crate::wire::headers::{DELIVERY_COUNT_HEADER, RETRY_COUNT_HEADER, TRACEPARENT_HEADER};
use serde_json::{Value, json};

/// What a message is to this service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// A message a handler receives (its `data` is what the handler reads).
    Received,
    /// A message this service publishes (a `#[producer]`, or a `#[function]`'s result).
    Sent,
    /// The reply to an RPC request a handler answers.
    Reply,
}

impl Role {
    /// The name used in the document (`x-eventrabbit-role`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Received => "received",
            Role::Sent => "sent",
            Role::Reply => "reply",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "received" => Some(Role::Received),
            "sent" => Some(Role::Sent),
            "reply" => Some(Role::Reply),
            _ => None,
        }
    }
}

/// The extension naming a message's action.
pub(crate) const ACTION_KEY: &str = "x-eventrabbit-action";
/// The extension naming a message's role.
pub(crate) const ROLE_KEY: &str = "x-eventrabbit-role";

/// The schema of an envelope's `action`: the action itself, or for a pattern (`USER_*`)
/// the actions it matches.
fn action_schema(action: &str) -> Value {
    if crate::handler::pattern::is_pattern(action) {
        let regex: String = action
            .split('*')
            .map(regex_escape)
            .collect::<Vec<_>>()
            .join(".*");
        json!({
            "type": "string",
            "pattern": format!("^{regex}$"),
            "description": format!("any action matching `{action}` (`*`: any run of characters)"),
        })
    } else {
        json!({ "type": "string", "const": action })
    }
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// An action a pattern stands for, for examples (`USER_*` → `USER_X`).
pub(crate) fn example_action(action: &str) -> String {
    action.replace('*', "X")
}

/// The headers a received message may carry.
fn received_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            TRACEPARENT_HEADER: {
                "type": "string",
                "description": "W3C trace context of the publisher; the handler's span joins its trace",
            },
            RETRY_COUNT_HEADER: {
                "type": "integer",
                "minimum": 0,
                "description": "retries so far (set by eventrabbit when it retries a failed message)",
            },
            DELIVERY_COUNT_HEADER: {
                "type": "integer",
                "minimum": 0,
                "description": "deliveries so far (set by quorum queues)",
            },
        },
    })
}

/// The correlation id, where AMQP keeps it: the `correlation_id` basic property, carried
/// in the content header frame beside the headers table, not as an entry of the table.
/// AsyncAPI's runtime expressions reach only `$message.header` and `$message.payload`
/// (protocol properties have no expression of their own, asyncapi/spec#551), so the
/// location names the message header and `x-eventrabbit-amqp-property` the property.
fn correlation_id(what: &str) -> Value {
    json!({
        "description": format!("{what}: the AMQP property `correlation_id` (a basic property of the message, not an entry of its headers table)"),
        "location": "$message.header#/correlation_id",
        "x-eventrabbit-amqp-property": "correlation_id",
    })
}

/// The headers a sent message carries.
fn sent_headers() -> Value {
    json!({
        "type": "object",
        "properties": {
            TRACEPARENT_HEADER: {
                "type": "string",
                "description": "W3C trace context of the publishing span (when tracing is on)",
            },
        },
    })
}

/// The message object of `action` in `role`, its `data` described by `data`.
pub(crate) fn message(action: &str, role: Role, data: Value, summary: String) -> Value {
    let mut message = match role {
        Role::Received | Role::Sent => json!({
            "name": action,
            "title": action,
            "summary": summary,
            "contentType": "application/json",
            "payload": {
                "type": "object",
                "description": "the eventrabbit envelope (wire-compatible with Python eventrabbit)",
                "required": ["action", "data"],
                "properties": { "action": action_schema(action), "data": data },
            },
        }),
        Role::Reply => json!({
            "name": format!("{action} reply"),
            "title": format!("{action} reply"),
            "summary": summary,
            "contentType": "application/json",
            "description": "Sent to the request's `reply_to` with its `correlation_id`. On \
                failure `data` is null and `error.message` says why.",
            "correlationId": correlation_id(
                "the request's correlation id, copied to the reply",
            ),
            "payload": {
                "type": "object",
                "required": ["data"],
                "properties": {
                    "data": data,
                    "error": {
                        "type": "object",
                        "description": "present when the handler failed",
                        "required": ["message"],
                        "properties": { "message": { "type": "string" } },
                    },
                },
            },
        }),
    };
    let headers = match role {
        Role::Received => Some(received_headers()),
        Role::Sent => Some(sent_headers()),
        Role::Reply => None,
    };
    let object = message.as_object_mut().expect("a message is an object");
    if let Some(headers) = headers {
        object.insert("headers".into(), headers);
    }
    if role == Role::Received {
        object.insert(
            "correlationId".into(),
            correlation_id(
                "an RPC request's correlation id (with `reply_to`), copied to the reply",
            ),
        );
    }
    object.insert(ACTION_KEY.into(), action.into());
    object.insert(ROLE_KEY.into(), role.as_str().into());
    message
}

/// The example payload of `message` whose `data` example is `data`.
pub(crate) fn example_payload(action: &str, role: Role, data: Value) -> Value {
    match role {
        Role::Reply => json!({ "data": data }),
        _ => json!({ "action": example_action(action), "data": data }),
    }
}
