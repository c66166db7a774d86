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
    with_current_span(own_outgoing_trace(mode))
}

fn own_outgoing_trace(mode: TracePropagation) -> Option<TraceContext> {
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
    let own = CURRENT
        .try_with(|c| c.propagate.then(|| c.trace.child()))
        .ok()
        .flatten();
    with_current_span(own)
}

/// With OpenTelemetry recording, a message that carries a trace carries the current
/// OpenTelemetry span's, so that its consumer's span is that span's child.
#[cfg(feature = "opentelemetry")]
fn with_current_span(own: Option<TraceContext>) -> Option<TraceContext> {
    own.map(|own| super::otel::current().unwrap_or(own))
}

#[cfg(not(feature = "opentelemetry"))]
fn with_current_span(own: Option<TraceContext>) -> Option<TraceContext> {
    own
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
#[cfg(not(feature = "opentelemetry"))]
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

/// The span of one delivery, with OpenTelemetry's messaging attributes, a child of the
/// span that published the message (from its `traceparent`); `action` is recorded once
/// known.
#[cfg(feature = "opentelemetry")]
pub(crate) fn delivery_span(message: &Message, trace: &TraceContext) -> tracing::Span {
    let p = &message.properties;
    let span = tracing::info_span!(
        "eventrabbit.consume",
        "otel.name" = %format_args!("{} process", message.queue),
        "otel.kind" = "consumer",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "process",
        "messaging.operation.name" = "process",
        "messaging.destination.name" = message.exchange.as_str(),
        "messaging.rabbitmq.destination.routing_key" = message.routing_key.as_str(),
        "messaging.consumer.group.name" = &*message.queue,
        "messaging.message.id" = p.message_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        "messaging.message.conversation_id" = p.correlation_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        "messaging.message.body.size" = message.body.len(),
        queue = %message.queue,
        action = tracing::field::Empty,
        message_id = p.message_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        correlation_id = p.correlation_id().as_ref().map(|s| s.as_str()).unwrap_or(""),
        retry_count = message.retry_count(),
        redelivered = message.redelivered,
        trace_id = %trace.trace(),
    );
    if !span.is_disabled()
        && let Some(parent) = TraceContext::from_headers(message.headers())
    {
        super::otel::adopt(&span, &parent);
    }
    span
}

/// The span of one RPC call.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn call_span(target: &str, action: &str, correlation_id: &str) -> tracing::Span {
    tracing::info_span!("eventrabbit.call", target, action, correlation_id)
}

/// The span of one RPC call: an OpenTelemetry client span with the messaging attributes.
#[cfg(feature = "opentelemetry")]
pub(crate) fn call_span(target: &str, action: &str, correlation_id: &str) -> tracing::Span {
    tracing::info_span!(
        "eventrabbit.call",
        "otel.name" = %format_args!("{target} call"),
        "otel.kind" = "client",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "send",
        "messaging.operation.name" = "call",
        "messaging.message.conversation_id" = correlation_id,
        target,
        action,
        correlation_id,
    )
}

/// The span of one publish.
#[cfg(not(feature = "opentelemetry"))]
pub(crate) fn publish_span(exchange: &str, routing_key: &str) -> tracing::Span {
    tracing::debug_span!("eventrabbit.publish", exchange, routing_key)
}

/// The span of one publish, with OpenTelemetry's messaging attributes.
#[cfg(feature = "opentelemetry")]
pub(crate) fn publish_span(exchange: &str, routing_key: &str) -> tracing::Span {
    tracing::info_span!(
        "eventrabbit.publish",
        "otel.name" = %format_args!("{} publish", if exchange.is_empty() { "amq.default" } else { exchange }),
        "otel.kind" = "producer",
        "messaging.system" = "rabbitmq",
        "messaging.operation.type" = "send",
        "messaging.operation.name" = "publish",
        "messaging.destination.name" = exchange,
        "messaging.rabbitmq.destination.routing_key" = routing_key,
        exchange,
        routing_key,
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
