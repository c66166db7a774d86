//! What the `Events` and `Handle` halves share.

use crate::config::Config;
use crate::connection::Connector;
use crate::health::{ConsumerHealth, ConsumerSlot, ConsumerState};
use crate::publisher::Publisher;
use crate::rpc::RpcClient;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The connection, publisher, RPC client, configuration and shutdown signal of one
/// `build_event_dependencies` call.
pub(crate) struct Shared {
    pub(crate) connector: Arc<Connector>,
    pub(crate) publisher: Publisher,
    pub(crate) rpc: RpcClient,
    pub(crate) config: Config,
    pub(crate) shutdown: CancellationToken,
    consumers: watch::Sender<usize>,
    slots: std::sync::Mutex<Vec<Arc<ConsumerSlot>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("connector", &self.connector)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counts a running consumer until dropped.
pub(crate) struct Running(watch::Sender<usize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Shared {
    pub(crate) fn new(connector: Arc<Connector>, config: Config) -> Self {
        Self {
            publisher: Publisher::new(connector.clone(), config.publish_timeout),
            rpc: RpcClient::new(connector.clone(), config.trace_propagation),
            connector,
            config,
            shutdown: CancellationToken::new(),
            consumers: watch::channel(0).0,
            slots: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn consumer_started(&self) -> Running {
        self.consumers.send_modify(|n| *n += 1);
        Running(self.consumers.clone())
    }

    /// Registers a consumer of `queue` for health reports (replacing a stopped one).
    pub(crate) fn consumer_slot(&self, queue: &str) -> Arc<ConsumerSlot> {
        let slot = Arc::new(ConsumerSlot::new(queue.to_owned()));
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|s| !(s.queue == queue && s.snapshot().state == ConsumerState::Stopped));
        slots.push(slot.clone());
        slot
    }

    /// Every consumer's health.
    pub(crate) fn consumer_health(&self) -> Vec<ConsumerHealth> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.iter().map(|s| s.snapshot()).collect()
    }

    pub(crate) fn consumers(&self) -> usize {
        *self.consumers.borrow()
    }

    /// Waits until no consumer runs.
    pub(crate) async fn consumers_stopped(&self) {
        let mut rx = self.consumers.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}
