//! Metrics through the `metrics` facade (no exporter is installed by eventrabbit, so
//! without one these are no-ops).
//!
//! Metric names: `eventrabbit_messages_consumed_total`, `eventrabbit_messages_failed_total`,
//! `eventrabbit_messages_retried_total`, `eventrabbit_messages_dead_lettered_total`
//! (labels `queue`, `action`, and `reason` for dead letters),
//! `eventrabbit_handler_duration_seconds` (histogram; `queue`, `action`),
//! `eventrabbit_publish_confirms_total` (no labels), `eventrabbit_publish_nacks_total` and
//! `eventrabbit_publish_unroutable_total` (`exchange`),
//! `eventrabbit_rpc_duration_seconds` (histogram; `action`, `outcome`) and
//! `eventrabbit_reconnects_total`.

use std::sync::Arc;
use std::time::Duration;

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

// The rarer events, one function each.

pub(crate) fn dead_lettered(queue: &Arc<str>, action: Option<&'static str>, reason: &'static str) {
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

pub(crate) fn unroutable(exchange: &str) {
    metrics::counter!("eventrabbit_publish_unroutable_total", "exchange" => exchange.to_owned())
        .increment(1);
}

pub(crate) fn rpc(action: &str, outcome: &'static str, took: Duration) {
    metrics::histogram!("eventrabbit_rpc_duration_seconds", "action" => action.to_owned(), "outcome" => outcome)
        .record(took.as_secs_f64());
}

pub(crate) fn reconnected() {
    metrics::counter!("eventrabbit_reconnects_total").increment(1);
}
