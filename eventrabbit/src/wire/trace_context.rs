//! The W3C trace context carried in the `traceparent` header.

use super::headers::TRACEPARENT_HEADER;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// A W3C trace context: `00-<trace id>-<parent id>-<flags>`. Ids are kept as numbers
/// and written out only when a header or an enabled span needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: u128,
    pub(crate) span_id: u64,
    pub(crate) flags: u8,
}

/// Displays a trace id as 32 lowercase hex digits.
#[derive(Debug)]
pub(crate) struct TraceId(u128);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

impl TraceContext {
    /// A new trace.
    pub(crate) fn root() -> Self {
        Self {
            trace_id: fastrand::u128(1..),
            span_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// A new span in the same trace.
    pub(crate) fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    /// Parses a `traceparent` value; `None` if malformed.
    pub(crate) fn parse(value: &[u8]) -> Option<Self> {
        let value = value.trim_ascii();
        let mut parts = value.split(|b| *b == b'-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || !version.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let trace_id = parse_hex(trace, 32).filter(|t| *t != 0)?;
        let span_id = parse_hex(span, 16).filter(|s| *s != 0)? as u64;
        let flags = parse_hex(flags, 2)? as u8;
        Some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// The trace context in a message's headers, if one is there and well formed.
    pub(crate) fn from_headers(headers: Option<&FieldTable>) -> Option<Self> {
        match headers?.inner().get(TRACEPARENT_HEADER)? {
            AMQPValue::LongString(s) => Self::parse(s.as_bytes()),
            AMQPValue::ShortString(s) => Self::parse(s.as_str().as_bytes()),
            _ => None,
        }
    }

    /// The `traceparent` value: `00-<trace id>-<span id>-<flags>`, lowercase hex.
    pub(crate) fn header_value(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(55);
        out.extend_from_slice(b"00-");
        push_hex(&mut out, self.trace_id, 32);
        out.push(b'-');
        push_hex(&mut out, u128::from(self.span_id), 16);
        out.push(b'-');
        push_hex(&mut out, u128::from(self.flags), 2);
        out
    }

    /// The trace id, for display.
    pub(crate) fn trace(&self) -> TraceId {
        TraceId(self.trace_id)
    }
}

/// Adds `traceparent` to `headers`.
pub(crate) fn with_traceparent(mut headers: FieldTable, trace: &TraceContext) -> FieldTable {
    headers.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::LongString(LongString::from(trace.header_value())),
    );
    headers
}

/// Exactly `digits` hex digits, as a number.
fn parse_hex(s: &[u8], digits: usize) -> Option<u128> {
    if s.len() != digits {
        return None;
    }
    s.iter().try_fold(0u128, |acc, b| {
        let d = (*b as char).to_digit(16)?;
        Some(acc << 4 | u128::from(d))
    })
}

/// Appends the low `digits` hex digits of `value`, lowercase, zero-padded.
fn push_hex(out: &mut Vec<u8>, value: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(HEX[((value >> (i * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_continues_a_traceparent() {
        let t = TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .unwrap();
        assert_eq!(t.trace().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.header_value(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert_eq!(TraceContext::parse(&c.header_value()), Some(c));
        assert_eq!(TraceContext::root().header_value().len(), 55);
        assert!(TraceContext::parse(b"00-0000-00f067aa0ba902b7-01").is_none());
        assert!(
            TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(
            TraceContext::parse(b"00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
                .is_none()
        );
        assert!(
            TraceContext::parse(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
    }
}
