//! [`QueuePolicy`]: how one queue treats its messages.

use crate::config::state::StateMap;
use crate::config::{ConsumeChannel, Resolved, RetryConfig};
use crate::error::{Error, Result};
use crate::handler::batch::Batcher;
use crate::handler::middleware::Layers;
use crate::handler::registry::{Route, Routes};
use crate::telemetry::metric::ActionMetrics;
use crate::wire::limits;
use crate::wire::names::retry_queue_name;
use std::sync::Arc;
use std::time::Duration;

/// How one queue treats its messages.
#[derive(Debug)]
pub(crate) struct QueuePolicy {
    pub(crate) queue: Arc<str>,
    pub(crate) routes: Routes,
    pub(crate) settings: Resolved,
    /// Indexed by [`Route::index`].
    metrics: Vec<ActionMetrics>,
    /// Each route's retry policy: the queue's, under the handler's own. By route index.
    retries: Vec<RetryConfig>,
    /// Layers around every handler of the queue, outermost first.
    pub(crate) layers: Layers,
    /// The open batch of each batch handler, by route index (unused for the others).
    batchers: Vec<Batcher>,
    /// The application state handed to handlers.
    pub(crate) state: StateMap,
}

impl QueuePolicy {
    pub(crate) fn new(queue: &str, routes: Routes, settings: Resolved, state: StateMap) -> Self {
        let queue: Arc<str> = queue.into();
        let metrics = routes
            .iter()
            .map(|reg| ActionMetrics::new(&queue, reg.action))
            .collect();
        let retries = routes
            .iter()
            .map(|reg| match &reg.retry {
                Some(own) => own.apply(&settings.retry),
                None => settings.retry.clone(),
            })
            .collect();
        let batchers = routes.iter().map(|_| Batcher::default()).collect();
        Self {
            batchers,
            queue,
            routes,
            settings,
            metrics,
            retries,
            layers: Layers::default(),
            state,
        }
    }

    /// Runs every handler of the queue through `layers`.
    #[must_use]
    pub(crate) fn with_layers(mut self, layers: Layers) -> Self {
        self.layers = layers;
        self
    }

    /// Whether a handler of the queue takes batches.
    pub(crate) fn has_batches(&self) -> bool {
        self.routes.iter().any(|reg| reg.batch.is_some())
    }

    /// Closes every open batch now: their handlers run without waiting out the window
    /// (a log's reader, once all the events it had read have joined).
    pub(crate) fn flush_batches(&self) {
        for batcher in &self.batchers {
            batcher.flush();
        }
    }

    /// The open batch of `route`'s (batch) handler.
    pub(crate) fn batcher(&self, route: Route) -> &Batcher {
        &self.batchers[route.index]
    }

    /// How `route`'s handler is retried.
    pub(super) fn retry(&self, route: Route) -> &RetryConfig {
        &self.retries[route.index]
    }

    /// What must hold before the queue starts: every handler's state is registered, and
    /// its retry wait queues have names AMQP takes.
    pub(crate) fn check(&self) -> Result<()> {
        self.check_state()?;
        self.check_wait_queues()
    }

    /// Fails unless every handler's retries, made in place by a keyed consumer, end
    /// within [`ConsumeChannel::MAX_KEYED_RETRY_WAIT`] in all, naming the handler.
    pub(crate) fn check_in_place_retries(&self) -> Result<()> {
        let limit = ConsumeChannel::MAX_KEYED_RETRY_WAIT;
        for (reg, retry) in self.routes.iter().zip(&self.retries) {
            let problem = match retry.max_retries {
                None => Some("retries without limit".to_owned()),
                Some(n) => {
                    // Summed until it passes the limit (`n` may be huge).
                    let mut total = Duration::ZERO;
                    for r in 1..=n {
                        total += retry.delay_for(r);
                        if total > limit {
                            break;
                        }
                    }
                    (total > limit).then(|| {
                        format!(
                            "waits over {} s in all over its {n} retries",
                            limit.as_secs()
                        )
                    })
                }
            };
            if let Some(problem) = problem {
                return Err(Error::InvalidQueue {
                    queue: self.queue.to_string(),
                    reason: format!(
                        "a keyed consumer retries in place, holding the key, but handler `{}` {problem}; give it a retry policy whose delays end within {} s (max_retries, delay, max_delay)",
                        reg.action,
                        limit.as_secs()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Fails unless every `State<T>` a handler of the queue takes is registered, naming
    /// the handler and the type.
    fn check_state(&self) -> Result<()> {
        for reg in self.routes.iter() {
            if let Some(need) = reg.needs().iter().find(|need| !self.state.has(need)) {
                return Err(Error::MissingState {
                    queue: self.queue.to_string(),
                    handler: reg.name.to_owned(),
                    state: need.name.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Fails unless the longest retry wait queue of every handler (under the queue's
    /// policy or its own `retry(..)`) fits in AMQP's 255 bytes, naming the handler.
    fn check_wait_queues(&self) -> Result<()> {
        for (reg, retry) in self.routes.iter().zip(&self.retries) {
            let longest = retry_queue_name(&self.queue, retry.delay_for(u32::MAX));
            if let Err(e) = limits::check_name("retry wait queue", &longest) {
                return Err(Error::InvalidQueue {
                    queue: self.queue.to_string(),
                    reason: format!("handler `{}`: {e}", reg.action),
                });
            }
        }
        Ok(())
    }

    pub(super) fn metrics(&self, route: Route) -> &ActionMetrics {
        &self.metrics[route.index]
    }
}
