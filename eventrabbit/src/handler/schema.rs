//! Payload schemas, for the AsyncAPI document (`contract`): the JSON Schema of a handler's `data` and result, and of a producer's
//! payload, taken from the types the macros see. A type implementing
//! [`schemars::JsonSchema`] gives its schema; any other type gives an open schema that
//! says so (autoref specialization picks one or the other where the type is known).

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Map, Value};
use std::marker::PhantomData;

/// Makes the schema of one payload, registering the named types it uses with the
/// generator.
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The marker of a schema made for a type without a `JsonSchema` implementation.
pub(crate) const UNKNOWN_MARK: &str = "x-eventrabbit-no-schema";

/// A type whose schema is wanted; see the module's documentation.
#[derive(Debug)]
pub struct SchemaProbe<T: ?Sized>(PhantomData<fn() -> Box<T>>);

impl<T: ?Sized> SchemaProbe<T> {
    /// A probe of `T`.
    #[must_use]
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: ?Sized> Default for SchemaProbe<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// The schema of a type implementing `JsonSchema` (chosen first).
pub trait ViaJsonSchema {
    /// `T`'s schema, or a reference to it.
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<T: JsonSchema + ?Sized> ViaJsonSchema for &SchemaProbe<T> {
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema {
        generator.subschema_for::<T>()
    }
}

/// The schema of any other type: open, and marked as such.
pub trait ViaAnySchema {
    /// An open schema naming `T`.
    fn schema(&self, generator: &mut SchemaGenerator) -> Schema;
}

impl<T: ?Sized> ViaAnySchema for SchemaProbe<T> {
    fn schema(&self, _: &mut SchemaGenerator) -> Schema {
        unknown_schema_of(std::any::type_name::<T>())
    }
}

/// An open schema for a type without one.
pub(crate) fn unknown_schema_of(type_name: &str) -> Schema {
    json_schema!({
        "description": format!(
            "{type_name}: no JSON Schema (derive schemars::JsonSchema for this type to document it)"
        ),
        UNKNOWN_MARK: true,
    })
}

/// An open schema, for a payload whose type cannot be named where it is registered (a
/// producer returning `Self` or a generic type).
pub fn unknown_schema(_: &mut SchemaGenerator) -> Schema {
    unknown_schema_of("this payload")
}

/// One parameter of a handler read from `data` by name.
#[derive(Debug, Clone, Copy)]
pub struct FieldSchema {
    /// The key in `data`.
    pub name: &'static str,
    /// Whether a message must carry it (parameters of `Option` type may be left out).
    pub required: bool,
    /// Its schema.
    pub schema: SchemaFn,
}

/// The schema of a `data` object made of `fields`: other keys are allowed (and ignored).
pub fn object_schema(generator: &mut SchemaGenerator, fields: &[FieldSchema]) -> Schema {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in fields {
        properties.insert(field.name.to_owned(), (field.schema)(generator).to_value());
        if field.required {
            required.push(Value::from(field.name));
        }
    }
    let mut object = Map::new();
    object.insert("type".into(), "object".into());
    object.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        object.insert("required".into(), Value::Array(required));
    }
    Schema::from(object)
}

/// A schema every one of `schemas` holds for (a `#[data]` parameter beside named ones).
pub fn all_of(schemas: Vec<Schema>) -> Schema {
    let all: Vec<Value> = schemas.into_iter().map(Schema::to_value).collect();
    json_schema!({ "allOf": all })
}

/// The schema of a handler's `()` result: a reply's `data` is `null`.
pub fn null_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "null"})
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Opaque;

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows pick the implementation
    fn a_type_with_a_schema_gives_it_and_any_other_an_open_one() {
        let mut generator = SchemaGenerator::default();
        #[allow(unused_imports)]
        use super::{ViaAnySchema as _, ViaJsonSchema as _};
        let known = (&&SchemaProbe::<i64>::new()).schema(&mut generator);
        assert_eq!(known.get("type"), Some(&Value::from("integer")));
        let unknown = (&&SchemaProbe::<Opaque>::new()).schema(&mut generator);
        assert_eq!(unknown.get(UNKNOWN_MARK), Some(&Value::Bool(true)));
        assert!(
            unknown
                .get("description")
                .unwrap()
                .as_str()
                .unwrap()
                .contains("Opaque"),
            "{unknown:?}"
        );
    }

    #[test]
    fn an_object_lists_its_fields_and_the_required_ones() {
        let mut generator = SchemaGenerator::default();
        let schema = object_schema(
            &mut generator,
            &[
                FieldSchema {
                    name: "id",
                    required: true,
                    schema: |g| g.subschema_for::<i64>(),
                },
                FieldSchema {
                    name: "note",
                    required: false,
                    schema: |g| g.subschema_for::<Option<String>>(),
                },
            ],
        );
        let value = schema.to_value();
        assert_eq!(value["required"], serde_json::json!(["id"]));
        assert_eq!(value["properties"]["id"]["type"], "integer");
        assert!(value["properties"]["note"].is_object());
    }
}
