//! Tracing spans, W3C `traceparent` propagation and metrics (through the `metrics`
//! facade: no exporter is installed by eventrabbit, so without one these are no-ops).
//!
//! Metric names: `eventrabbit_messages_consumed_total`, `eventrabbit_messages_failed_total`,
//! `eventrabbit_messages_retried_total`, `eventrabbit_messages_dead_lettered_total`
//! (labels `queue`, `action`, and `reason` for dead letters),
//! `eventrabbit_handler_duration_seconds` (histogram; `queue`, `action`),
//! `eventrabbit_publish_confirms_total`, `eventrabbit_publish_nacks_total` (`exchange`),
//! `eventrabbit_rpc_duration_seconds` (histogram; `action`, `outcome`) and
//! `eventrabbit_reconnects_total`.

use crate::context::Message;
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::sync::Arc;
use std::time::Duration;

/// Header carrying the W3C trace context.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// A W3C trace context: `00-<trace id>-<parent id>-<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) flags: String,
}

impl TraceContext {
    fn random_hex(len: usize) -> String {
        let mut s = uuid::Uuid::new_v4().simple().to_string();
        s.truncate(len);
        s
    }

    /// A new trace.
    pub(crate) fn root() -> Self {
        Self {
            trace_id: uuid::Uuid::new_v4().simple().to_string(),
            span_id: Self::random_hex(16),
            flags: "01".to_owned(),
        }
    }

    /// A new span in the same trace.
    pub(crate) fn child(&self) -> Self {
        Self {
            trace_id: self.trace_id.clone(),
            span_id: Self::random_hex(16),
            flags: self.flags.clone(),
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
        if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self {
            trace_id: trace.to_ascii_lowercase(),
            span_id: span.to_ascii_lowercase(),
            flags: flags.to_owned(),
        })
    }

    pub(crate) fn header_value(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
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
        trace_id = %trace.trace_id,
    )
}

/// Metric recording, one function per event.
pub(crate) mod metric {
    use super::*;

    pub(crate) fn consumed(queue: &Arc<str>, action: &'static str, took: Duration) {
        metrics::counter!("eventrabbit_messages_consumed_total", "queue" => queue.clone(), "action" => action).increment(1);
        metrics::histogram!("eventrabbit_handler_duration_seconds", "queue" => queue.clone(), "action" => action)
            .record(took.as_secs_f64());
    }

    pub(crate) fn failed(queue: &Arc<str>, action: &'static str, took: Duration) {
        metrics::counter!("eventrabbit_messages_failed_total", "queue" => queue.clone(), "action" => action).increment(1);
        metrics::histogram!("eventrabbit_handler_duration_seconds", "queue" => queue.clone(), "action" => action)
            .record(took.as_secs_f64());
    }

    pub(crate) fn retried(queue: &Arc<str>, action: &'static str) {
        metrics::counter!("eventrabbit_messages_retried_total", "queue" => queue.clone(), "action" => action).increment(1);
    }

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

    pub(crate) fn confirmed(exchange: &str) {
        metrics::counter!("eventrabbit_publish_confirms_total", "exchange" => exchange.to_owned())
            .increment(1);
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
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        let c = t.child();
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.span_id, t.span_id);
        assert_eq!(TraceContext::parse(&c.header_value()), Some(c));
        assert!(TraceContext::parse("00-0000-00f067aa0ba902b7-01").is_none());
        assert!(
            TraceContext::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01")
                .is_none()
        );
    }

    #[tokio::test]
    async fn publishing_inside_a_trace_continues_it() {
        let root = TraceContext::root();
        let inner = in_trace(root.clone(), async { outgoing_traceparent() }).await;
        assert_eq!(inner.trace_id, root.trace_id);
        assert_ne!(outgoing_traceparent().trace_id, root.trace_id);
    }
}
