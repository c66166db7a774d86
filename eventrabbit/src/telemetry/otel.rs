//! OpenTelemetry (the `opentelemetry` feature): eventrabbit's spans take part in
//! OpenTelemetry traces through `tracing-opentelemetry`. A delivery's span gets the
//! incoming `traceparent` as its remote parent, and what is published carries the W3C
//! context of the OpenTelemetry span current at the time (a handler's delivery span, or
//! the caller's span), so producer, consumer and reply make one trace.

use crate::wire::trace_context::TraceContext;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Makes `parent` (from a message's `traceparent`) the OpenTelemetry parent of `span`.
pub(crate) fn adopt(span: &tracing::Span, parent: &TraceContext) {
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id.to_be_bytes()),
        SpanId::from_bytes(parent.span_id.to_be_bytes()),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The W3C context of the current span, if an OpenTelemetry layer records it.
pub(crate) fn current() -> Option<TraceContext> {
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| TraceContext {
        trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
        flags: sc.trace_flags().to_u8(),
    })
}
