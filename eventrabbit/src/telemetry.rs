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
    pub(crate) fn parse(value: &str) -> Option<Self> {
        let mut parts = value.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex(version, 2) || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
        let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
        Some(Self {
            trace_id,
            span_id,
            flags: u8::from_str_radix(flags, 16).ok()?,
        })
    }

    pub(crate) fn header_value(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// The trace id, for display.
    pub(crate) fn trace(&self) -> TraceId {
        TraceId(self.trace_id)
    }
}

tokio::task_local! {
    /// The trace of the delivery whose handler is running on this task.
    static CURRENT: TraceContext;
}

/// Runs `fut` as part of `trace`: what it publishes continues that trace.
pub(crate) async fn in_trace<F: std::future::Future>(trace: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(trace, fut).await
}

/// The `traceparent` of a message published now: a child of the current delivery's trace,
/// or a new trace.
pub(crate) fn outgoing_traceparent() -> TraceContext {
    CURRENT
        .try_with(TraceContext::child)
        .unwrap_or_else(|_| TraceContext::root())
}

/// Adds `traceparent` to `headers`.
pub(crate) fn with_traceparent(mut headers: FieldTable, trace: &TraceContext) -> FieldTable {
    headers.insert(
        TRACEPARENT_HEADER.into(),
        AMQPValue::LongString(LongString::from(trace.header_value())),
    );
    headers
}

/// The trace a delivery continues: the one in its `traceparent` header, or a new one.
pub(crate) fn incoming_trace(message: &Message) -> TraceContext {
    let parent = message
        .headers()
        .and_then(|h| h.inner().get(TRACEPARENT_HEADER))
        .and_then(|v| match v {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
            AMQPValue::ShortString(s) => Some(s.to_string()),
            _ => None,
        })
        .and_then(|v| TraceContext::parse(&v));
    match parent {
        Some(p) => p.child(),
        None => TraceContext::root(),
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
        let t =
            TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(t.trace().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            t.header_value(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert_eq!(TraceContext::parse(&c.header_value()), Some(c));
        assert_eq!(TraceContext::root().header_value().len(), 55);
        assert!(TraceContext::parse("00-0000-00f067aa0ba902b7-01").is_none());
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
    }

    #[tokio::test]
    async fn publishing_inside_a_trace_continues_it() {
        let root = TraceContext::root();
        let inner = in_trace(root, async { outgoing_traceparent() }).await;
        assert_eq!(inner.trace_id, root.trace_id);
        assert_ne!(outgoing_traceparent().trace_id, root.trace_id);
    }
}
