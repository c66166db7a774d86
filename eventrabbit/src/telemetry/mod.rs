//! Observability: tracing spans and trace propagation, metrics, and the health of each
//! consumer.

pub(crate) mod health;
pub(crate) mod metric;
#[cfg(feature = "opentelemetry")]
pub(crate) mod otel;
pub(crate) mod trace;
