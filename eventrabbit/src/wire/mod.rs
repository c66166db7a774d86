//! The wire format, with no I/O: envelopes and replies, the headers eventrabbit reads and
//! writes, message properties and the W3C trace context.

pub(crate) mod delay;
pub(crate) mod envelope;
pub(crate) mod headers;
pub(crate) mod limits;
pub(crate) mod names;
pub(crate) mod properties;
pub(crate) mod redact;
pub(crate) mod trace_context;
