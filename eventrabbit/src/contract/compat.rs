//! Breaking changes between two AsyncAPI documents: two versions of one service, or a
//! producer's and a consumer's. Works on the documents alone, so it checks a peer's file
//! as well as this service's own.
//!
//! Every comparison asks one question: does everything a *writer* may send fit what a
//! *reader* accepts? Between versions, the old received schema is the writer (peers still
//! send what it accepted) and the new one the reader; for sent messages the new schema
//! writes and the old one (what consumers were built for) reads.

use super::ids::deref;
use super::messages::{ACTION_KEY, ROLE_KEY, Role};
use crate::handler::pattern;
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// Schemas are compared this deep.
const MAX_DEPTH: usize = 24;

/// One change that breaks a peer, naming the action and what changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakingChange {
    action: String,
    role: Role,
    detail: String,
}

impl BreakingChange {
    /// The action whose message changed.
    #[must_use]
    pub fn action(&self) -> &str {
        &self.action
    }

    /// Whether the message is received, sent or a reply.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// What changed, naming the field (`data.user.email`) where there is one.
    #[must_use]
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for BreakingChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.action,
            self.role.as_str(),
            self.detail
        )
    }
}

/// A message of a document: its action, role and `data` schema.
#[derive(Debug)]
struct Message<'a> {
    action: String,
    role: Role,
    data: &'a Value,
}

/// The messages of `doc`, read from its operations (so that any AsyncAPI 3 document of
/// envelopes works, not only ours).
fn messages(doc: &Value) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let Some(operations) = doc.get("operations").and_then(Value::as_object) else {
        return out;
    };
    for operation in operations.values() {
        let operation = deref(doc, operation);
        let role = match operation.get("action").and_then(Value::as_str) {
            Some("receive") => Role::Received,
            Some("send") => Role::Sent,
            _ => continue,
        };
        for m in refs(operation.get("messages")) {
            out.extend(message(doc, deref(doc, m), role));
        }
        if let Some(reply) = operation.get("reply").map(|r| deref(doc, r)) {
            for m in refs(reply.get("messages")) {
                out.extend(message(doc, deref(doc, m), Role::Reply));
            }
        }
    }
    let mut seen = BTreeSet::new();
    out.retain(|m| seen.insert((m.action.clone(), m.role)));
    out
}

fn refs(list: Option<&Value>) -> &[Value] {
    list.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn message<'a>(doc: &'a Value, m: &'a Value, operation_role: Role) -> Option<Message<'a>> {
    let payload = deref(doc, m.get("payload")?);
    let role = m
        .get(ROLE_KEY)
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .unwrap_or(operation_role);
    let properties = payload.get("properties");
    let action = m
        .get(ACTION_KEY)
        .and_then(Value::as_str)
        .or_else(|| properties?.get("action")?.get("const")?.as_str())
        .or_else(|| m.get("name")?.as_str())?
        .to_owned();
    let data = properties.and_then(|p| p.get("data")).unwrap_or(payload);
    Some(Message { action, role, data })
}

/// Which message of `candidates` takes `action` in `role`: the same action, or a pattern
/// matching it.
fn find<'m, 'a>(
    candidates: &'m [Message<'a>],
    action: &str,
    role: Role,
) -> Option<&'m Message<'a>> {
    candidates
        .iter()
        .filter(|m| m.role == role)
        .find(|m| m.action == action)
        .or_else(|| {
            candidates
                .iter()
                .filter(|m| m.role == role)
                .find(|m| pattern::is_pattern(&m.action) && pattern::matches(&m.action, action))
        })
}

/// Breaking changes from `old` to `new` (two versions of one service).
pub(crate) fn between_versions(old: &Value, new: &Value) -> Vec<BreakingChange> {
    let (before, after) = (messages(old), messages(new));
    let mut out = Vec::new();
    for m in &before {
        let Some(now) = find(&after, &m.action, m.role) else {
            let detail = match m.role {
                Role::Received => {
                    "no longer received: messages peers send are dead-lettered as an unknown action"
                }
                Role::Sent => "no longer sent: consumers of it get nothing",
                Role::Reply => continue,
            };
            out.push(change(m, detail.to_owned()));
            continue;
        };
        let problems = match m.role {
            Role::Received => Fit::versions(old, new, true).check(m.data, now.data),
            Role::Sent | Role::Reply => Fit::versions(new, old, false).check(now.data, m.data),
        };
        out.extend(problems.into_iter().map(|d| change(m, d)));
    }
    out
}

/// Mismatches between what `producer` sends and what `consumer` receives.
pub(crate) fn producer_to_consumer(producer: &Value, consumer: &Value) -> Vec<BreakingChange> {
    let (sent, received) = (messages(producer), messages(consumer));
    let mut out = Vec::new();
    for m in sent.iter().filter(|m| m.role == Role::Sent) {
        if let Some(reader) = find(&received, &m.action, Role::Received) {
            let problems = Fit::peers(producer, consumer).check(m.data, reader.data);
            out.extend(problems.into_iter().map(|d| change(m, d)));
        }
    }
    out
}

fn change(m: &Message<'_>, detail: String) -> BreakingChange {
    BreakingChange {
        action: m.action.clone(),
        role: m.role,
        detail,
    }
}

/// How the two sides are named in what is reported.
#[derive(Debug, Clone, Copy)]
enum Sides {
    /// Versions; `received`: the writer is the old version (else the new one).
    Versions { received: bool },
    /// A producer writing, a consumer reading.
    Peers,
}

/// One writer/reader comparison.
struct Fit<'a> {
    writer_doc: &'a Value,
    reader_doc: &'a Value,
    sides: Sides,
    problems: Vec<String>,
}

impl<'a> Fit<'a> {
    fn versions(writer_doc: &'a Value, reader_doc: &'a Value, received: bool) -> Self {
        Self {
            writer_doc,
            reader_doc,
            sides: Sides::Versions { received },
            problems: Vec::new(),
        }
    }

    fn peers(writer_doc: &'a Value, reader_doc: &'a Value) -> Self {
        Self {
            writer_doc,
            reader_doc,
            sides: Sides::Peers,
            problems: Vec::new(),
        }
    }

    fn check(mut self, writer: &Value, reader: &Value) -> Vec<String> {
        self.fits(writer, reader, "data", 0);
        self.problems
    }

    fn fits(&mut self, writer: &Value, reader: &Value, path: &str, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let writer = Shape::of(self.writer_doc, writer);
        let reader = Shape::of(self.reader_doc, reader);
        if let (Some(w), Some(r)) = (&writer.types, &reader.types)
            && !w.iter().all(|t| accepts(r, t))
        {
            self.type_changed(path, w, r);
            return;
        }
        for (name, required) in &reader.required {
            let field = format!("{path}.{name}");
            if !required {
                continue;
            }
            match writer.properties.get(name) {
                _ if writer.required.iter().any(|(n, r)| n == name && *r) => {}
                None if writer.open => {}
                present => self.missing(&field, present.is_some()),
            }
        }
        for (name, r) in &reader.properties {
            if let Some(w) = writer.properties.get(name) {
                self.fits(w, r, &format!("{path}.{name}"), depth + 1);
            }
        }
        if let (Some(w), Some(r)) = (writer.items, reader.items) {
            self.fits(w, r, &format!("{path}[]"), depth + 1);
        }
    }

    fn type_changed(&mut self, path: &str, writer: &BTreeSet<String>, reader: &BTreeSet<String>) {
        let (w, r) = (join(writer), join(reader));
        self.problems.push(match self.sides {
            Sides::Versions { received: true } => {
                format!("field `{path}` changed type from {w} to {r}")
            }
            Sides::Versions { received: false } => {
                format!("field `{path}` changed type from {r} to {w}")
            }
            Sides::Peers => format!("field `{path}` is sent as {w} but read as {r}"),
        });
    }

    /// A field the reader requires that the writer leaves out (`sometimes`: it may).
    fn missing(&mut self, path: &str, sometimes: bool) {
        self.problems.push(match (self.sides, sometimes) {
            (Sides::Versions { received: true }, false) => {
                format!("field `{path}` is new and required")
            }
            (Sides::Versions { received: true }, true) => format!("field `{path}` became required"),
            (Sides::Versions { received: false }, false) => {
                format!("field `{path}` is no longer sent")
            }
            (Sides::Versions { received: false }, true) => {
                format!("field `{path}` may now be left out")
            }
            (Sides::Peers, false) => {
                format!("the consumer requires field `{path}`, which the producer does not send")
            }
            (Sides::Peers, true) => format!(
                "the consumer requires field `{path}`, which the producer does not always send"
            ),
        });
    }
}

fn join(types: &BTreeSet<String>) -> String {
    types.iter().cloned().collect::<Vec<_>>().join(" or ")
}

/// Whether a reader of `types` accepts a value of type `t`.
fn accepts(types: &BTreeSet<String>, t: &str) -> bool {
    types.contains(t) || (t == "integer" && types.contains("number"))
}

/// What a schema says, flattened: its types (`None`: any), properties, required fields
/// and array items.
#[derive(Debug, Default)]
struct Shape<'a> {
    types: Option<BTreeSet<String>>,
    properties: Map<String, Value>,
    /// Each listed property, and whether it is required.
    required: Vec<(String, bool)>,
    items: Option<&'a Value>,
    /// Whether the schema says nothing of its properties (anything may be there).
    open: bool,
}

impl<'a> Shape<'a> {
    fn of(doc: &'a Value, schema: &'a Value) -> Self {
        let mut shape = Shape::default();
        shape.add(doc, schema, 0);
        shape.open = shape.properties.is_empty();
        shape
    }

    fn add(&mut self, doc: &'a Value, schema: &'a Value, depth: usize) {
        if depth > MAX_DEPTH {
            return;
        }
        let schema = deref(doc, schema);
        let Some(object) = schema.as_object() else {
            return;
        };
        if let Some(t) = own_types(object) {
            self.types = Some(match self.types.take() {
                // `allOf`: both hold.
                Some(before) => before.intersection(&t).cloned().collect(),
                None => t,
            });
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alternatives) = object.get(key).and_then(Value::as_array) {
                self.alternatives(doc, alternatives, depth);
            }
        }
        if let Some(all) = object.get("allOf").and_then(Value::as_array) {
            for part in all {
                self.add(doc, part, depth + 1);
            }
        }
        if let Some(properties) = object.get("properties").and_then(Value::as_object) {
            for (name, p) in properties {
                self.properties.insert(name.clone(), p.clone());
                if !self.required.iter().any(|(n, _)| n == name) {
                    self.required.push((name.clone(), false));
                }
            }
        }
        if let Some(required) = object.get("required").and_then(Value::as_array) {
            for name in required.iter().filter_map(Value::as_str) {
                match self.required.iter_mut().find(|(n, _)| n == name) {
                    Some(entry) => entry.1 = true,
                    None => self.required.push((name.to_owned(), true)),
                }
            }
        }
        if let Some(items) = object.get("items").filter(|i| i.is_object()) {
            self.items = Some(items);
        }
    }

    /// `anyOf`/`oneOf`: the union of the alternatives' types; the one non-null
    /// alternative's fields (`Option<Struct>`).
    fn alternatives(&mut self, doc: &'a Value, alternatives: &'a [Value], depth: usize) {
        let mut union = BTreeSet::new();
        let mut known = true;
        let mut non_null = Vec::new();
        for alternative in alternatives {
            let alternative = deref(doc, alternative);
            let mut shape = Shape::default();
            shape.add(doc, alternative, depth + 1);
            match &shape.types {
                Some(t) => union.extend(t.iter().cloned()),
                None => known = false,
            }
            if shape
                .types
                .as_ref()
                .is_none_or(|t| !(t.len() == 1 && t.contains("null")))
            {
                non_null.push(alternative);
            }
        }
        if known {
            self.types = Some(match self.types.take() {
                Some(before) => before.intersection(&union).cloned().collect(),
                None => union,
            });
        }
        if let [only] = non_null.as_slice() {
            let types = self.types.take();
            self.add(doc, only, depth + 1);
            self.types = types;
        }
    }
}

/// The types a schema object names itself (`type`, `const`, `enum`).
fn own_types(object: &Map<String, Value>) -> Option<BTreeSet<String>> {
    if let Some(t) = object.get("type") {
        return match t {
            Value::String(t) => Some(BTreeSet::from([t.clone()])),
            Value::Array(ts) => Some(
                ts.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
            ),
            _ => None,
        };
    }
    let values: Vec<&Value> = match (object.get("const"), object.get("enum")) {
        (Some(c), _) => vec![c],
        (None, Some(Value::Array(e))) => e.iter().collect(),
        _ => return None,
    };
    Some(
        values
            .into_iter()
            .map(|v| json_type(v).to_owned())
            .collect(),
    )
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A document with one operation per `(action, role, data)`.
    fn doc(messages: &[(&str, &str, Value)]) -> Value {
        let mut operations = Map::new();
        for (i, (action, role, data)) in messages.iter().enumerate() {
            operations.insert(
                format!("op{i}"),
                json!({
                    "action": if *role == "sent" { "send" } else { "receive" },
                    "channel": {"$ref": "#/channels/c"},
                    "messages": [{
                        "payload": {"type": "object", "properties": {
                            "action": {"type": "string", "const": action}, "data": data,
                        }},
                    }],
                }),
            );
        }
        json!({
            "asyncapi": "3.0.0",
            "operations": operations,
            "components": {"schemas": {
                "Address": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string"}}},
                "Address2": {"type": "object", "required": ["city"], "properties": {"city": {"type": "integer"}}},
            }},
        })
    }

    fn object(required: &[&str], properties: Value) -> Value {
        json!({"type": "object", "required": required, "properties": properties})
    }

    fn details(changes: Vec<BreakingChange>) -> Vec<String> {
        changes.into_iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn versions_name_removed_actions_new_required_fields_and_changed_types() {
        let old = doc(&[
            (
                "SEND",
                "received",
                object(
                    &["id"],
                    json!({"id": {"type": "integer"}, "note": {"type": ["string", "null"]}}),
                ),
            ),
            ("GONE", "received", object(&[], json!({}))),
            (
                "SENT",
                "sent",
                object(
                    &["id", "at"],
                    json!({"id": {"type": "integer"}, "at": {"type": "string"}}),
                ),
            ),
            (
                "KEPT",
                "received",
                object(
                    &["where"],
                    json!({"where": {"$ref": "#/components/schemas/Address"}}),
                ),
            ),
        ]);
        let new = doc(&[
            (
                "SEND",
                "received",
                object(
                    &["id", "email"],
                    json!({"id": {"type": "string"}, "email": {"type": "string"}, "note": {"type": ["string", "null"]}}),
                ),
            ),
            (
                "SENT",
                "sent",
                object(
                    &["id"],
                    json!({"id": {"type": "integer"}, "at": {"type": ["string", "null"]}}),
                ),
            ),
            (
                "KEPT",
                "received",
                object(
                    &["where"],
                    json!({"where": {"$ref": "#/components/schemas/Address2"}}),
                ),
            ),
        ]);
        let found = details(between_versions(&old, &new));
        let expected = [
            "SEND (received): field `data.id` changed type from integer to string",
            "SEND (received): field `data.email` is new and required",
            "GONE (received): no longer received",
            "SENT (sent): field `data.at` may now be left out",
            "SENT (sent): field `data.at` changed type from string to null or string",
            "KEPT (received): field `data.where.city` changed type from string to integer",
        ];
        for e in expected {
            assert!(
                found.iter().any(|f| f.starts_with(e)),
                "missing {e:?} in {found:#?}"
            );
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
        assert!(between_versions(&old, &old).is_empty());
    }

    #[test]
    fn compatible_changes_are_not_reported() {
        let old = doc(&[
            (
                "A",
                "received",
                object(&["id"], json!({"id": {"type": "integer"}})),
            ),
            (
                "B",
                "sent",
                object(&["id"], json!({"id": {"type": "integer"}})),
            ),
        ]);
        let new = doc(&[
            // A reader may drop a requirement, add an optional field, widen a type.
            (
                "A",
                "received",
                object(
                    &[],
                    json!({"id": {"type": "number"}, "x": {"type": "string"}}),
                ),
            ),
            ("A_EXTRA", "received", object(&[], json!({}))),
            // A writer may add fields.
            (
                "B",
                "sent",
                object(
                    &["id", "y"],
                    json!({"id": {"type": "integer"}, "y": {"type": "string"}}),
                ),
            ),
        ]);
        assert_eq!(details(between_versions(&old, &new)), Vec::<String>::new());
    }

    #[test]
    fn a_pattern_still_receives_an_action_it_matches() {
        let old = doc(&[("USER_CREATED", "received", object(&[], json!({})))]);
        let new = doc(&[("USER_*", "received", object(&[], json!({})))]);
        assert!(between_versions(&old, &new).is_empty());
    }

    #[test]
    fn a_consumer_requiring_what_a_producer_does_not_send_is_named() {
        let producer = doc(&[(
            "USER_CREATED",
            "sent",
            object(
                &["id"],
                json!({"id": {"type": "integer"}, "name": {"type": ["string", "null"]}}),
            ),
        )]);
        let consumer = doc(&[(
            "USER_CREATED",
            "received",
            object(
                &["id", "name", "email"],
                json!({"id": {"type": "string"}, "name": {"type": "string"}, "email": {"type": "string"}}),
            ),
        )]);
        let found = details(producer_to_consumer(&producer, &consumer));
        for e in [
            "USER_CREATED (sent): field `data.id` is sent as integer but read as string",
            "USER_CREATED (sent): the consumer requires field `data.name`, which the producer does not always send",
            "USER_CREATED (sent): the consumer requires field `data.email`, which the producer does not send",
            "USER_CREATED (sent): field `data.name` is sent as null or string but read as string",
        ] {
            assert!(found.iter().any(|f| f == e), "missing {e:?} in {found:#?}");
        }
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(producer_to_consumer(&producer, &producer).is_empty());
    }
}
