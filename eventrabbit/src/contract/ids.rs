//! Names inside the document: component keys allow only `[A-Za-z0-9_.-]`, and references
//! are JSON pointers (made here, and followed).

use std::collections::BTreeMap;

/// `name` with every character a component key does not allow replaced by `_`.
pub(crate) fn sanitize(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() {
        "_".to_owned()
    } else {
        clean
    }
}

/// `key` escaped as one JSON pointer token.
pub(crate) fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A reference object to `#/<section>/<key>`.
pub(crate) fn reference(path: &[&str]) -> serde_json::Value {
    let tokens: Vec<String> = path.iter().map(|k| pointer_token(k)).collect();
    serde_json::json!({ "$ref": format!("#/{}", tokens.join("/")) })
}

/// `value`, or what its `$ref` (`#/...`, a pointer within `doc`) points to, followed a
/// bounded number of times.
pub(crate) fn deref<'a>(
    doc: &'a serde_json::Value,
    value: &'a serde_json::Value,
) -> &'a serde_json::Value {
    let mut value = value;
    for _ in 0..24 {
        match value
            .get("$ref")
            .and_then(serde_json::Value::as_str)
            .and_then(|t| t.strip_prefix('#'))
            .and_then(|p| doc.pointer(p))
        {
            Some(v) => value = v,
            None => break,
        }
    }
    value
}

/// Keys given out under one map: a wanted key taken by another value gets a numbered
/// suffix; the same value asked for twice gets the same key.
#[derive(Debug)]
pub(crate) struct Keys<V> {
    taken: BTreeMap<String, V>,
}

impl<V> Default for Keys<V> {
    fn default() -> Self {
        Self {
            taken: BTreeMap::new(),
        }
    }
}

impl<V: PartialEq> Keys<V> {
    /// The key of `value` under `wanted` (sanitized).
    pub(crate) fn key_for(&mut self, wanted: &str, value: V) -> String {
        let base = sanitize(wanted);
        let mut key = base.clone();
        let mut n = 1;
        loop {
            match self.taken.get(&key) {
                None => {
                    self.taken.insert(key.clone(), value);
                    return key;
                }
                Some(v) if *v == value => return key,
                Some(_) => {
                    n += 1;
                    key = format!("{base}.{n}");
                }
            }
        }
    }

    /// Every key and its value, sorted by key.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (String, V)> {
        self.taken.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_clean_unique_and_stable() {
        assert_eq!(sanitize("USER_*"), "USER__");
        assert_eq!(sanitize("a b/c:d"), "a_b_c_d");
        assert_eq!(sanitize(""), "_");
        let mut keys = Keys::default();
        assert_eq!(keys.key_for("A", 1), "A");
        assert_eq!(keys.key_for("A", 1), "A");
        assert_eq!(keys.key_for("A", 2), "A.2");
        assert_eq!(keys.key_for("A", 2), "A.2");
        assert_eq!(
            reference(&["channels", "a/b", "m"])["$ref"],
            "#/channels/a~1b/m"
        );
    }
}
