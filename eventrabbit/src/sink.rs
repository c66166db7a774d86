//! Where `#[producer]` functions publish: the newest live `build_event_dependencies`
//! result or [`TestBroker`](crate::testing::TestBroker) made on the caller's tokio runtime
//! (else the newest anywhere), unless a test broker is running handlers on this task, in
//! which case it is that broker. Preferring the caller's runtime keeps parallel tests
//! (one runtime each) publishing through their own connection.

use crate::runtime::Shared;
use crate::testing;
use std::sync::{Arc, RwLock, Weak};
use tokio::runtime::{Handle, Id};

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

struct Registered {
    sink: Sink,
    /// The runtime it was made on, if any.
    runtime: Option<Id>,
}

static SINKS: RwLock<Vec<Registered>> = RwLock::new(Vec::new());

fn current_runtime() -> Option<Id> {
    Handle::try_current().ok().map(|h| h.id())
}

impl Sink {
    fn live(&self) -> Option<LiveSink> {
        match self {
            Sink::Broker(w) => w
                .upgrade()
                .filter(|s| !s.shutdown.is_cancelled())
                .map(LiveSink::Broker),
            Sink::Test(w) => w.upgrade().map(LiveSink::Test),
        }
    }

    fn gone(&self) -> bool {
        match self {
            Sink::Broker(w) => w.strong_count() == 0,
            Sink::Test(w) => w.strong_count() == 0,
        }
    }
}

/// Makes `sink` the newest.
pub(crate) fn register(sink: Sink) {
    let mut sinks = SINKS.write().unwrap_or_else(|e| e.into_inner());
    sinks.retain(|r| !r.sink.gone());
    sinks.push(Registered {
        sink,
        runtime: current_runtime(),
    });
}

/// The sink a producer publishes to now.
pub(crate) fn current() -> Option<LiveSink> {
    if let Some(test) = testing::scoped() {
        return Some(LiveSink::Test(test));
    }
    let here = current_runtime();
    let sinks = SINKS.read().unwrap_or_else(|e| e.into_inner());
    let newest = |same_runtime: bool| {
        sinks
            .iter()
            .rev()
            .filter(|r| !same_runtime || (here.is_some() && r.runtime == here))
            .find_map(|r| r.sink.live())
    };
    newest(true).or_else(|| newest(false))
}
