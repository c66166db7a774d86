//! Tracing spans and W3C trace propagation: the trace each delivery continues, and the
//! trace what its handler publishes carries on.

use crate::config::TracePropagation;
use crate::handler::context::Message;
use crate::wire::trace_context::TraceContext;

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

/// The trace a delivery continues: the one in its `traceparent` header (then `true`), or a
/// new one.
pub(crate) fn incoming_trace(message: &Message) -> (TraceContext, bool) {
    match TraceContext::from_headers(message.headers()) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
