//! Where `#[producer]` functions publish: the newest live sink (a
//! `build_event_dependencies` instance or a test broker) made on the caller's tokio
//! runtime, else the newest anywhere, unless a test broker runs handlers on this task, in
//! which case it is that broker. Preferring the caller's runtime keeps parallel tests
//! (one runtime each) publishing through their own connection.
//!
//! Sinks register themselves here; this module knows nothing of what they are.

use crate::error::{Error, Result};
use parking_lot::RwLock;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use tokio::runtime::{Handle, Id};

/// The future of one producer publish.
pub(crate) type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// Something `#[producer]` functions can publish through.
pub(crate) trait ProducerSink: Send + Sync {
    /// Whether it still takes publishes (it is not shut down).
    fn is_live(&self) -> bool;

    /// Publishes an encoded envelope to `exchange` with `routing_key`; with `mandatory`
    /// (or the sink's own configuration saying so), no queue receiving it is an error.
    fn publish_envelope<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        body: Vec<u8>,
        mandatory: bool,
    ) -> PublishFuture<'a>;
}

struct Registered {
    sink: Weak<dyn ProducerSink>,
    /// The runtime it was made on, if any.
    runtime: Option<Id>,
}

static SINKS: RwLock<Vec<Registered>> = RwLock::new(Vec::new());

tokio::task_local! {
    /// The test broker running handlers on this task, if any.
    static SCOPED: Arc<dyn ProducerSink>;
}

fn current_runtime() -> Option<Id> {
    Handle::try_current().ok().map(|h| h.id())
}

/// Makes `sink` the newest.
pub(crate) fn register(sink: Weak<dyn ProducerSink>) {
    let mut sinks = SINKS.write();
    sinks.retain(|r| r.sink.strong_count() > 0);
    sinks.push(Registered {
        sink,
        runtime: current_runtime(),
    });
}

/// Runs `fut` with `sink` as the one producers on this task publish to.
pub(crate) async fn scope<F: Future>(sink: Arc<dyn ProducerSink>, fut: F) -> F::Output {
    SCOPED.scope(sink, fut).await
}

/// The sink a producer publishes to now.
fn current() -> Option<Arc<dyn ProducerSink>> {
    if let Ok(scoped) = SCOPED.try_with(Arc::clone) {
        return Some(scoped);
    }
    let here = current_runtime();
    let sinks = SINKS.read();
    let newest = |same_runtime: bool| {
        sinks
            .iter()
            .rev()
            .filter(|r| !same_runtime || (here.is_some() && r.runtime == here))
            .find_map(|r| r.sink.upgrade().filter(|s| s.is_live()))
    };
    newest(true).or_else(|| newest(false))
}

/// Publishes a `#[producer]`'s result through the current sink (`mandatory` if the
/// attribute says so).
pub async fn publish_produced<T: serde::Serialize + ?Sized>(
    exchange: &str,
    routing_key: &str,
    action: &str,
    data: &T,
    mandatory: bool,
) -> Result<()> {
    let body = crate::wire::envelope::encode_envelope(action, data)?;
    let sink = current().ok_or_else(|| Error::NotInitialized(action.to_owned()))?;
    sink.publish_envelope(exchange, routing_key, body, mandatory)
        .await
}
