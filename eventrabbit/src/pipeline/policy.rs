//! [`QueuePolicy`]: how one queue treats its messages.

use crate::config::Resolved;
use crate::handler::registry::{Route, Routes};
use crate::telemetry::metric::ActionMetrics;
use std::sync::Arc;

/// How one queue treats its messages.
#[derive(Debug)]
pub(crate) struct QueuePolicy {
    pub(crate) queue: Arc<str>,
    pub(crate) routes: Routes,
    pub(crate) settings: Resolved,
    /// Indexed by [`Route::index`].
    metrics: Vec<ActionMetrics>,
}

impl QueuePolicy {
    pub(crate) fn new(queue: &str, routes: Routes, settings: Resolved) -> Self {
        let queue: Arc<str> = queue.into();
        let metrics = routes
            .iter()
            .map(|reg| ActionMetrics::new(&queue, reg.action))
            .collect();
        Self {
            queue,
            routes,
            settings,
            metrics,
        }
    }

    pub(super) fn metrics(&self, route: Route) -> &ActionMetrics {
        &self.metrics[route.index]
    }
}
