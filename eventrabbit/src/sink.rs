//! Where `#[producer]` functions publish: the newest live `build_event_dependencies`
//! result or [`TestBroker`](crate::testing::TestBroker), unless a test broker is running
//! handlers on this task, in which case it is that broker.

use crate::runtime::Shared;
use crate::testing;
use std::sync::{Arc, RwLock, Weak};

/// One place producers can publish to.
#[derive(Debug, Clone)]
pub(crate) enum Sink {
    Broker(Weak<Shared>),
    Test(Weak<testing::Inner>),
}

/// A live sink.
pub(crate) enum LiveSink {
    Broker(Arc<Shared>),
    Test(Arc<testing::Inner>),
}

static SINKS: RwLock<Vec<Sink>> = RwLock::new(Vec::new());

/// Makes `sink` the newest.
pub(crate) fn register(sink: Sink) {
    let mut sinks = SINKS.write().unwrap_or_else(|e| e.into_inner());
    sinks.retain(|s| match s {
        Sink::Broker(w) => w.strong_count() > 0,
        Sink::Test(w) => w.strong_count() > 0,
    });
    sinks.push(sink);
}

/// The sink a producer publishes to now.
pub(crate) fn current() -> Option<LiveSink> {
    if let Some(test) = testing::scoped() {
        return Some(LiveSink::Test(test));
    }
    let sinks = SINKS.read().unwrap_or_else(|e| e.into_inner());
    sinks.iter().rev().find_map(|s| match s {
        Sink::Broker(w) => w
            .upgrade()
            .filter(|s| !s.shutdown.is_cancelled())
            .map(LiveSink::Broker),
        Sink::Test(w) => w.upgrade().map(LiveSink::Test),
    })
}
