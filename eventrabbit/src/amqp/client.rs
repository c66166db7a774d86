//! [`Client`]: one `build_event_dependencies` call's connection, publisher, RPC client,
//! configuration, shutdown signal and consumers.

use super::connection::Connector;
use super::delay;
use super::in_doubt::DoubtSlot;
use super::publisher::Publisher;
use super::retry::{Declared, Sender, send_to_queue};
use super::rpc::RpcClient;
use crate::config::{Config, PublishOptions};
use crate::error::Result;
use crate::handler::middleware::Layers;
use crate::handler::producers::{ProducerSink, PublishFuture};
use crate::pipeline::transport::Outgoing;
use crate::telemetry::health::{ConsumerHealth, ConsumerSlot};
use crate::telemetry::trace;
use crate::wire::limits::{check_name, short};
use crate::wire::properties::{Plain, properties};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The connection, publisher, RPC client, configuration and shutdown signal of one
/// `build_event_dependencies` call: what the `Events` and `Handle` halves share.
pub(crate) struct Client {
    pub(crate) connector: Arc<Connector>,
    pub(crate) publisher: Publisher,
    /// The retry and dead-letter queues known to exist.
    pub(crate) declared: Declared,
    pub(crate) rpc: RpcClient,
    pub(crate) config: Config,
    pub(crate) shutdown: CancellationToken,
    /// Cancelled when a shutdown's deadline passed: consumers return without waiting for
    /// their handlers (whose deliveries the broker then redelivers).
    pub(crate) abort: CancellationToken,
    consumers: watch::Sender<usize>,
    slots: Mutex<Vec<Arc<ConsumerSlot>>>,
    /// Layers around the handlers of every queue consumed from now on.
    pub(crate) layers: Mutex<Layers>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
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

impl Client {
    pub(crate) fn new(connector: Arc<Connector>, config: Config) -> Self {
        Self {
            publisher: Publisher::new(
                connector.clone(),
                config.publish_timeout,
                config.max_publish_size,
            ),
            declared: Declared::default(),
            rpc: RpcClient::new(connector.clone(), config.trace_propagation),
            connector,
            config,
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            consumers: watch::channel(0).0,
            slots: Mutex::default(),
            layers: Mutex::default(),
        }
    }

    pub(crate) fn consumer_started(&self) -> Running {
        self.consumers.send_modify(|n| *n += 1);
        Running(self.consumers.clone())
    }

    /// Registers a consumer of `queue` for health reports (replacing a stopped one).
    pub(crate) fn consumer_slot(&self, queue: &str) -> Arc<ConsumerSlot> {
        let slot = Arc::new(ConsumerSlot::new(queue.to_owned()));
        let mut slots = self.slots.lock();
        slots.retain(|s| !(s.queue == queue && s.state().is_over()));
        slots.push(slot.clone());
        slot
    }

    /// Forgets the ended consumer of `queue` (a partition handed to another instance).
    pub(crate) fn forget_slot(&self, queue: &str) {
        self.slots
            .lock()
            .retain(|s| !(s.queue == queue && s.state().is_over()));
    }

    /// Every consumer's health.
    pub(crate) fn consumer_health(&self) -> Vec<ConsumerHealth> {
        let slots = self.slots.lock();
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

    /// Publishes an encoded envelope with confirms; with `mandatory` (or
    /// `Config::mandatory`), no queue receiving it is an error.
    pub(crate) async fn publish_envelope(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        mandatory: bool,
    ) -> Result<()> {
        self.publisher
            .publish(Outgoing {
                exchange,
                routing_key,
                body,
                properties: Plain::new(trace::outgoing_trace(self.config.trace_propagation)).into(),
                mandatory: mandatory || self.config.mandatory,
            })
            .await
    }

    /// Publishes an encoded envelope to `exchange` / `routing_key` after `delay` (rounded
    /// up onto the grid of [`delay`](super::delay)): confirmed once the broker holds it in
    /// the wait queue.
    pub(crate) async fn publish_envelope_after(
        &self,
        delay: Duration,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> Result<()> {
        let delay = crate::wire::delay::on_grid(delay)?;
        if delay.is_zero() {
            return self
                .publish_envelope(exchange, routing_key, body, false)
                .await;
        }
        check_name("exchange", exchange)?;
        check_name("routing key", routing_key)?;
        let queue_type = self
            .config
            .delay_queue_type
            .unwrap_or(self.config.queue.queue_type);
        let (queue, arguments) = delay::wait_queue(exchange, routing_key, delay, queue_type);
        send_to_queue(
            self.sender(None),
            delay::target(&queue, arguments),
            body,
            properties(trace::outgoing_trace(self.config.trace_propagation)),
            Instant::now() + self.config.publish_timeout,
        )
        .await
    }

    /// What sends retries, dead letters and delayed publishes through wait queues; a
    /// publish left in doubt goes to `doubt`, if given.
    pub(crate) fn sender<'a>(&'a self, doubt: Option<&'a DoubtSlot>) -> Sender<'a> {
        Sender {
            connector: &self.connector,
            publisher: &self.publisher,
            declared: &self.declared,
            doubt,
        }
    }

    /// Publishes an encoded envelope as `options` say.
    pub(crate) async fn publish_envelope_with(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        options: &PublishOptions,
    ) -> Result<()> {
        let mut props = properties(trace::outgoing_trace(self.config.trace_propagation));
        if let Some(id) = &options.message_id {
            check_name("message id", id)?;
            props = props.with_message_id(id.as_str().into());
        }
        if !options.headers.is_empty() {
            let mut headers = props.headers().clone().unwrap_or_default();
            for (k, v) in &options.headers {
                headers.insert(short("header key", k)?, v.clone());
            }
            props = props.with_headers(headers);
        }
        props = options.apply_to(props)?;
        self.publisher
            .publish(Outgoing {
                exchange,
                routing_key,
                body,
                properties: props.into(),
                mandatory: options.mandatory || self.config.mandatory,
            })
            .await
    }
}

impl ProducerSink for Client {
    fn is_live(&self) -> bool {
        !self.shutdown.is_cancelled()
    }

    fn publish_envelope<'a>(
        &'a self,
        exchange: &'a str,
        routing_key: &'a str,
        body: Vec<u8>,
        mandatory: bool,
    ) -> PublishFuture<'a> {
        Box::pin(async move {
            Client::publish_envelope(self, exchange, routing_key, &body, mandatory).await
        })
    }
}
