//! A payload's JSON Schema as a table of fields: name, type, required, description, with
//! named schemas linked to their definition and expanded in place (to a bounded depth).

use super::ids::deref;
use super::markdown::{escape, inline};
use serde_json::Value;
use std::fmt::Write as _;

/// How deep nested objects are expanded in one table.
const MAX_DEPTH: usize = 3;

/// One row of a field table.
struct Row {
    name: String,
    kind: String,
    required: bool,
    description: String,
}

/// The table of `schema`'s fields (rows named from `prefix`); a schema without fields is
/// one row describing the whole value.
pub(crate) fn table(doc: &Value, schema: &Value, whole: &str) -> String {
    let mut rows = Vec::new();
    collect(doc, schema, "", 0, &mut rows);
    if rows.is_empty() {
        rows.push(Row {
            name: whole.to_owned(),
            kind: type_name(doc, schema),
            required: true,
            description: description(doc, schema),
        });
    }
    let mut html = String::from(
        "<table class=\"fields\"><thead><tr><th>field</th><th>type</th><th>required</th>\
         <th>description</th></tr></thead><tbody>",
    );
    for row in rows {
        let _ = write!(
            html,
            "<tr><td class=\"field\"><code>{}</code></td><td class=\"type\">{}</td>\
             <td class=\"required\">{}</td><td>{}</td></tr>",
            escape(&row.name),
            row.kind,
            if row.required { "yes" } else { "no" },
            row.description
        );
    }
    html.push_str("</tbody></table>");
    html
}

fn collect(doc: &Value, schema: &Value, prefix: &str, depth: usize, rows: &mut Vec<Row>) {
    let resolved = deref(doc, schema);
    // `#[data] T` beside named parameters: all of `T` and an object of the others.
    if let Some(parts) = resolved.get("allOf").and_then(Value::as_array)
        && depth + 1 < MAX_DEPTH
    {
        for part in parts {
            collect(doc, part, prefix, depth + 1, rows);
        }
    }
    let Some(properties) = resolved.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = resolved
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in properties {
        let full = format!("{prefix}{name}");
        rows.push(Row {
            name: full.clone(),
            kind: type_name(doc, property),
            required: required.contains(&name.as_str()),
            description: description(doc, property),
        });
        if depth + 1 >= MAX_DEPTH {
            continue;
        }
        let inner = deref(doc, property);
        let nested = nullable_inner(doc, inner).unwrap_or(inner);
        if nested.get("properties").is_some() {
            collect(doc, nested, &format!("{full}."), depth + 1, rows);
        } else if let Some(items) = nested.get("items") {
            collect(doc, items, &format!("{full}[]."), depth + 1, rows);
        }
    }
}

/// The non-null member of an `anyOf`/`oneOf` of a schema and `null` (an `Option<T>`).
fn nullable_inner<'a>(doc: &'a Value, schema: &'a Value) -> Option<&'a Value> {
    let members = schema
        .get("anyOf")
        .or_else(|| schema.get("oneOf"))?
        .as_array()?;
    let mut others = members
        .iter()
        .filter(|m| deref(doc, m).get("type").and_then(Value::as_str) != Some("null"));
    let first = others.next()?;
    others.next().is_none().then(|| deref(doc, first))
}

fn description(doc: &Value, schema: &Value) -> String {
    let own = schema.get("description").and_then(Value::as_str);
    let text = own.or_else(|| {
        deref(doc, schema)
            .get("description")
            .and_then(Value::as_str)
    });
    text.map(inline).unwrap_or_default()
}

/// A schema's type, in words, with named schemas linked.
pub(crate) fn type_name(doc: &Value, schema: &Value) -> String {
    type_name_at(doc, schema, 0)
}

fn type_name_at(doc: &Value, schema: &Value, depth: usize) -> String {
    if depth > 6 {
        return "…".to_owned();
    }
    if let Some(name) = schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/components/schemas/"))
    {
        return format!("<a href=\"#schema-{0}\"><code>{0}</code></a>", escape(name));
    }
    let schema = deref(doc, schema);
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        let names: Vec<String> = parts
            .iter()
            .map(|m| type_name_at(doc, m, depth + 1))
            .collect();
        return format!("all of {}", names.join(", "));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(members) = schema.get(key).and_then(Value::as_array) {
            let names: Vec<String> = members
                .iter()
                .map(|m| type_name_at(doc, m, depth + 1))
                .collect();
            return names.join(" or ");
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let shown: Vec<String> = values
            .iter()
            .take(12)
            .map(|v| format!("<code>{}</code>", escape(&v.to_string())))
            .collect();
        return format!("one of {}", shown.join(", "));
    }
    if let Some(value) = schema.get("const") {
        return format!("<code>{}</code>", escape(&value.to_string()));
    }
    let kinds: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let words: Vec<String> = kinds
        .iter()
        .map(|kind| match *kind {
            "array" => match schema.get("items") {
                Some(items) => format!("array of {}", type_name_at(doc, items, depth + 1)),
                None => "array".to_owned(),
            },
            "object" => match schema.get("additionalProperties") {
                Some(values) if values.is_object() => {
                    format!("map of {}", type_name_at(doc, values, depth + 1))
                }
                _ => "object".to_owned(),
            },
            other => match schema.get("format").and_then(Value::as_str) {
                Some(format) => format!("{} ({})", escape(other), escape(format)),
                None => escape(other),
            },
        })
        .collect();
    if words.is_empty() {
        "any".to_owned()
    } else {
        words.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schema_referring_to_itself_makes_a_bounded_table() {
        let doc = json!({"components": {"schemas": {"A": {
            "allOf": [{"$ref": "#/components/schemas/A"}],
            "properties": {"a": {"$ref": "#/components/schemas/A"},
                           "b": {"type": "array", "items": {"$ref": "#/components/schemas/A"}}},
            "required": ["a"],
        }}}});
        let table = table(&doc, &json!({"$ref": "#/components/schemas/A"}), "data");
        assert!(
            table.contains("<code>a</code>") && table.contains("<code>a.a</code>"),
            "{table}"
        );
        assert!(table.contains("array of <a href=\"#schema-A\">"), "{table}");
        assert!(table.len() < 100_000);
    }

    #[test]
    fn types_read_in_words() {
        let doc = json!({});
        for (schema, words) in [
            (
                json!({"type": "integer", "format": "int64"}),
                "integer (int64)",
            ),
            (json!({"type": ["string", "null"]}), "string or null"),
            (
                json!({"anyOf": [{"type": "string"}, {"type": "null"}]}),
                "string or null",
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "number"}}),
                "map of number",
            ),
            (
                json!({"enum": ["a", 1]}),
                "one of <code>&quot;a&quot;</code>, <code>1</code>",
            ),
            (json!({}), "any"),
        ] {
            assert_eq!(type_name(&doc, &schema), words, "{schema}");
        }
    }
}
