//! Example values made from a JSON Schema: what a message of that shape looks like, for
//! the document's message examples and the HTML page.

use serde_json::{Map, Value, json};

/// Schemas are followed this deep (recursive types end in `null`).
const MAX_DEPTH: usize = 12;

/// An example of `schema`, resolving `$ref`s to `#/components/schemas/..` in `schemas`.
pub(crate) fn example(schema: &Value, schemas: &Map<String, Value>) -> Value {
    Example { schemas }.of(schema, 0)
}

struct Example<'a> {
    schemas: &'a Map<String, Value>,
}

impl Example<'_> {
    fn of(&self, schema: &Value, depth: usize) -> Value {
        let Some(schema) = schema.as_object() else {
            return Value::Null;
        };
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        if let Some(target) = schema.get("$ref").and_then(Value::as_str) {
            return match resolve(target, self.schemas) {
                Some(s) => self.of(s, depth + 1),
                None => Value::Null,
            };
        }
        for key in ["const", "default"] {
            if let Some(v) = schema.get(key) {
                return v.clone();
            }
        }
        if let Some(v) = schema
            .get("examples")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return v.clone();
        }
        if let Some(v) = schema
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        {
            return v.clone();
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(first) = schema
                .get(key)
                .and_then(Value::as_array)
                .and_then(|alts| alts.iter().find(|s| !is_null_schema(s)).or(alts.first()))
            {
                return self.of(first, depth + 1);
            }
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            let mut merged = Map::new();
            for part in all {
                match self.of(part, depth + 1) {
                    Value::Object(fields) => merged.extend(fields),
                    other if all.len() == 1 => return other,
                    _ => {}
                }
            }
            return Value::Object(merged);
        }
        match first_type(schema) {
            Some("object") => self.object(schema, depth),
            Some("array") => {
                let item = schema
                    .get("items")
                    .map(|s| self.of(s, depth + 1))
                    .unwrap_or(Value::Null);
                let n = schema
                    .get("minItems")
                    .and_then(Value::as_u64)
                    .unwrap_or(1)
                    .max(1);
                Value::Array(vec![item; n.min(3) as usize])
            }
            Some("string") => string_example(schema),
            Some("integer") => json!(schema.get("minimum").and_then(Value::as_i64).unwrap_or(1)),
            Some("number") => json!(schema.get("minimum").and_then(Value::as_f64).unwrap_or(1.5)),
            Some("boolean") => json!(true),
            Some("null") => Value::Null,
            _ if schema.contains_key("properties") => self.object(schema, depth),
            _ => Value::Null,
        }
    }

    fn object(&self, schema: &Map<String, Value>, depth: usize) -> Value {
        let mut out = Map::new();
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                out.insert(name.clone(), self.of(prop, depth + 1));
            }
        }
        Value::Object(out)
    }
}

/// The schema a `#/components/schemas/NAME` reference points to.
pub(crate) fn resolve<'a>(target: &str, schemas: &'a Map<String, Value>) -> Option<&'a Value> {
    let name = target.strip_prefix("#/components/schemas/")?;
    schemas.get(&name.replace("~1", "/").replace("~0", "~"))
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
}

/// The first non-null type of a schema (`"type": ["string", "null"]` → `string`).
fn first_type(schema: &Map<String, Value>) -> Option<&str> {
    match schema.get("type")? {
        Value::String(t) => Some(t),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .or(Some("null")),
        _ => None,
    }
}

fn string_example(schema: &Map<String, Value>) -> Value {
    let example = match schema.get("format").and_then(Value::as_str) {
        Some("date-time") => "2026-01-31T12:00:00Z",
        Some("date") => "2026-01-31",
        Some("time") => "12:00:00",
        Some("uuid") => "6f1c2a3e-8d4b-4f7a-9c1e-2b3d4e5f6a7b",
        Some("email") => "ann@example.com",
        Some("uri") => "https://example.com/",
        Some("ipv4") => "192.0.2.1",
        Some("ipv6") => "2001:db8::1",
        _ => "text",
    };
    json!(example)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_follow_types_references_and_alternatives() {
        let schemas: Map<String, Value> = serde_json::from_value(json!({
            "Point": {"type": "object", "properties": {"x": {"type": "integer"}, "tag": {"enum": ["a", "b"]}}},
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/components/schemas/Node"}}},
        }))
        .unwrap();
        let schema = json!({
            "type": "object",
            "properties": {
                "at": {"$ref": "#/components/schemas/Point"},
                "when": {"type": "string", "format": "date-time"},
                "maybe": {"type": ["integer", "null"], "minimum": 5},
                "many": {"type": "array", "items": {"type": "boolean"}},
                "either": {"anyOf": [{"type": "null"}, {"type": "number"}]},
                "chain": {"$ref": "#/components/schemas/Node"},
            }
        });
        let e = example(&schema, &schemas);
        assert_eq!(e["at"], json!({"x": 1, "tag": "a"}));
        assert_eq!(e["when"], "2026-01-31T12:00:00Z");
        assert_eq!(e["maybe"], 5);
        assert_eq!(e["many"], json!([true]));
        assert_eq!(e["either"], 1.5);
        assert!(e["chain"]["next"]["next"].is_object(), "{e}");
    }
}
