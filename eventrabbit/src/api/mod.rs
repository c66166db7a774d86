//! The public surface: [`build_event_dependencies`](build::build_event_dependencies) and
//! the [`Events`](events::Events) and [`Handle`](handle::Handle) it returns.

pub(crate) mod build;
pub(crate) mod consumer;
pub(crate) mod events;
pub(crate) mod handle;
pub(crate) mod log_partitions;
pub(crate) mod replay;
pub(crate) mod service;
