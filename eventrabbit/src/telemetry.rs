//! Tracing spans, W3C `traceparent` propagation and metrics (through the `metrics`
//! facade: no exporter is installed by eventrabbit, so without one these are no-ops).
//!
//! Metric names: `eventrabbit_messages_consumed_total`, `eventrabbit_messages_failed_total`,
//! `eventrabbit_messages_retried_total`, `eventrabbit_messages_dead_lettered_total`
//! (labels `queue`, `action`, and `reason` for dead letters),
//! `eventrabbit_handler_duration_seconds` (histogram; `queue`, `action`),
//! `eventrabbit_publish_confirms_total` (no labels), `eventrabbit_publish_nacks_total` (`exchange`),
//! `eventrabbit_rpc_duration_seconds` (histogram; `action`, `outcome`) and
//! `eventrabbit_reconnects_total`.

use crate::config::TracePropagation;
use crate::context::Message;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::sync::Arc;
use std::time::Duration;

/// Header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

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

/// The trace a handler runs in, and whether what it publishes carries that trace on.
#[derive(Debug, Clone, Copy)]
struct Current {
    trace: TraceContext,
    propagate: bool,
}

tokio::task_local! {
    /// The trace of the delivery whose handler is running on this task.
    static CURRENT: Current;
}

/// Runs `fut` as part of `trace`: if `propagate`, what it publishes continues that trace.
pub(crate) async fn in_trace<F: std::future::Future>(
    trace: TraceContext,
    propagate: bool,
    fut: F,
) -> F::Output {
    CURRENT.scope(Current { trace, propagate }, fut).await
}

/// Whether a delivery's handler passes its trace on: always or never if so configured;
/// by default when the trace came in a `traceparent` or the delivery's span is recorded.
pub(crate) fn propagates(mode: TracePropagation, from_header: bool, span: &tracing::Span) -> bool {
    match mode {
        TracePropagation::Always => true,
        TracePropagation::Never => false,
        TracePropagation::Auto => from_header || !span.is_disabled(),
    }
}

/// The trace a message published now carries, if any. Inside a handler: a child of its
/// delivery's trace, if that trace is passed on. Elsewhere: a new trace, always or never
/// if so configured, by default only while eventrabbit's spans are recorded.
pub(crate) fn outgoing_trace(mode: TracePropagation) -> Option<TraceContext> {
    match CURRENT.try_with(|c| *c) {
        Ok(current) => current.propagate.then(|| current.trace.child()),
        Err(_) => match mode {
            TracePropagation::Always => Some(TraceContext::root()),
            TracePropagation::Never => None,
            TracePropagation::Auto => {
                tracing::enabled!(tracing::Level::INFO).then(TraceContext::root)
            }
        },
    }
}

/// The trace a handler's own messages (results, replies) carry, if any.
pub(crate) fn handler_trace() -> Option<TraceContext> {
    CURRENT
        .try_with(|c| c.propagate.then(|| c.trace.child()))
        .ok()
        .flatten()
}

/// Adds `traceparent` to `headers`.
pub(crate) fn with_traceparent(mut headers: FieldTable, trace: &TraceContext) -> FieldTable {
    headers.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::LongString(LongString::from(trace.header_value())),
    );
    headers
}

/// The trace a delivery continues: the one in its `traceparent` header (then `true`), or a
/// new one.
pub(crate) fn incoming_trace(message: &Message) -> (TraceContext, bool) {
    let parent = message
        .headers()
        .and_then(|h| h.inner().get(TRACEPARENT_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => TraceContext::parse(s.as_bytes()),
            AMQPValue::ShortString(s) => TraceContext::parse(s.as_str().as_bytes()),
            _ => None,
        });
    match parent {
        Some(p) => (p.child(), true),
        None => (TraceContext::root(), false),
    }
}

/// The span of one delivery; `action` is recorded once known.
pub(crate) fn delivery_span(message: &Message, trace: &TraceContext) -> tracing::Span {
    let p = &message.properties;
    tracing::info_span!(
        "eventrabbit.consume",
        queue = %message.queue,
        action = tracing::field::Empty,
        message_id = p.message_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        correlation_id = p.correlation_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        retry_count = message.retry_count(),
        redelivered = message.redelivered,
        trace_id = %trace.trace(),
    )
}

/// The metric handles of one action on one queue, registered once when the queue starts
/// (so the delivery path does not build metric keys). A recorder installed after that
/// does not see these series.
#[derive(Debug, Clone)]
pub(crate) struct ActionMetrics {
    consumed: metrics::Counter,
    failed: metrics::Counter,
    retried: metrics::Counter,
    duration: metrics::Histogram,
}

impl ActionMetrics {
    pub(crate) fn new(queue: &Arc<str>, action: &'static str) -> Self {
        let labels = [("queue", queue.clone()), ("action", action.into())];
        let labels = || {
            labels
                .iter()
                .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                .collect::<Vec<_>>()
        };
        Self {
            consumed: metrics::counter!("eventrabbit_messages_consumed_total", labels()),
            failed: metrics::counter!("eventrabbit_messages_failed_total", labels()),
            retried: metrics::counter!("eventrabbit_messages_retried_total", labels()),
            duration: metrics::histogram!("eventrabbit_handler_duration_seconds", labels()),
        }
    }

    pub(crate) fn handled(&self, ok: bool, took: Duration) {
        if ok { &self.consumed } else { &self.failed }.increment(1);
        self.duration.record(took.as_secs_f64());
    }

    pub(crate) fn retried(&self) {
        self.retried.increment(1);
    }
}

/// Metric recording for the rarer events, one function per event.
pub(crate) mod metric {
    use super::*;

    pub(crate) fn dead_lettered(
        queue: &Arc<str>,
        action: Option<&'static str>,
        reason: &'static str,
    ) {
        metrics::counter!(
            "eventrabbit_messages_dead_lettered_total",
            "queue" => queue.clone(),
            "action" => action.unwrap_or(""),
            "reason" => reason
        )
        .increment(1);
    }

    /// The handle of the confirmed-publish counter (registered once per publisher).
    pub(crate) fn confirms() -> metrics::Counter {
        metrics::counter!("eventrabbit_publish_confirms_total")
    }

    pub(crate) fn nacked(exchange: &str) {
        metrics::counter!("eventrabbit_publish_nacks_total", "exchange" => exchange.to_owned())
            .increment(1);
    }

    pub(crate) fn rpc(action: &str, outcome: &'static str, took: Duration) {
        metrics::histogram!("eventrabbit_rpc_duration_seconds", "action" => action.to_owned(), "outcome" => outcome)
            .record(took.as_secs_f64());
    }

    pub(crate) fn reconnected() {
        metrics::counter!("eventrabbit_reconnects_total").increment(1);
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

    #[tokio::test]
    async fn publishing_inside_a_trace_continues_it() {
        let root = TraceContext::root();
        let mode = TracePropagation::Always;
        let inner = in_trace(root, true, async { outgoing_trace(mode) }).await;
        assert_eq!(inner.unwrap().trace_id, root.trace_id);
        assert_ne!(outgoing_trace(mode).unwrap().trace_id, root.trace_id);
        // A handler whose trace is not passed on publishes none, whatever the mode.
        assert_eq!(
            in_trace(root, false, async { outgoing_trace(mode) }).await,
            None
        );
        // Outside a handler, with no subscriber recording spans.
        assert_eq!(outgoing_trace(TracePropagation::Auto), None);
        assert_eq!(outgoing_trace(TracePropagation::Never), None);
    }
}
