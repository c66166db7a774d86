//! How RabbitMQ's exchange kinds route, for the in-memory test broker.

use crate::config::ExchangeKind;
use crate::wire::headers::header_text;
use lapin::types::FieldTable;

/// Whether a binding with `binding_key` / `arguments` on an exchange of `kind` takes a
/// message published with `routing_key` and `headers`.
pub(crate) fn matches(
    kind: ExchangeKind,
    binding_key: &str,
    arguments: &FieldTable,
    routing_key: &str,
    headers: Option<&FieldTable>,
) -> bool {
    match kind {
        // Every binding is a candidate; the broker picks one by hash (`pick_by_hash`).
        ExchangeKind::Fanout | ExchangeKind::ConsistentHash => true,
        ExchangeKind::Direct => binding_key == routing_key,
        ExchangeKind::Topic => topic_matches(binding_key, routing_key),
        ExchangeKind::Headers => headers_match(arguments, headers),
    }
}

/// The one queue of `candidates` (sorted) a consistent-hash exchange routes `routing_key`
/// to: stable for a key, spread over the queues.
pub(crate) fn pick_by_hash(candidates: &mut Vec<String>, routing_key: &str) {
    if candidates.len() > 1 {
        // FNV-1a: the same key goes to the same queue in every run.
        let hash = routing_key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let pick = (hash % candidates.len() as u64) as usize;
        let one = candidates.swap_remove(pick);
        *candidates = vec![one];
    }
}

/// `*` matches one word, `#` zero or more; words are separated by `.`.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(w), Some(x)) if w == x => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    };
    go(&p, &k)
}

/// `x-match` `all` (default) or `any`, over the binding's non-`x-` arguments.
fn headers_match(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let any = arguments
        .inner()
        .get("x-match")
        .and_then(header_text)
        .is_some_and(|m| m.starts_with("any"));
    let wanted: Vec<(&str, Option<String>)> = arguments
        .inner()
        .iter()
        .filter(|(k, _)| !k.as_str().starts_with("x-"))
        .map(|(k, v)| (k.as_str(), header_text(v)))
        .collect();
    let has = |key: &str, value: &Option<String>| {
        headers
            .and_then(|h| h.inner().get(key))
            .and_then(header_text)
            .is_some_and(|v| value.as_ref().is_none_or(|want| *want == v))
    };
    if any {
        wanted.iter().any(|(k, v)| has(k, v))
    } else {
        wanted.iter().all(|(k, v)| has(k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_wildcards() {
        assert!(topic_matches("user.*.created", "user.eu.created"));
        assert!(!topic_matches("user.*.created", "user.eu.x.created"));
        assert!(topic_matches("user.#", "user"));
        assert!(topic_matches("user.#", "user.a.b"));
        assert!(topic_matches("#.created", "a.b.created"));
        assert!(topic_matches("#", ""));
        assert!(!topic_matches("user.*", "user"));
    }
}
