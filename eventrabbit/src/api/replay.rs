//! Event logs on a [`Handle`]: declaring them, and replaying them through the handlers.

use super::consumer::Consumer;
use super::handle::{Handle, started};
use super::log_partitions::LogPartitions;
use crate::amqp::partitions::member;
use crate::amqp::partitions::queues::plugin_missing;
use crate::config::{EventLog, StreamConsumer};
use crate::error::{Error, Result};
use crate::handler::registry;
use crate::pipeline::policy::QueuePolicy;
use crate::stream::consumer::{StreamRun, run};
use crate::telemetry::health::{ConsumerState, EndGuard};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Told once a reader is subscribed.
type Ready = tokio::sync::oneshot::Sender<()>;

impl Handle {
    /// Declares `log` (a stream, with its retention) and binds it to its exchanges: from
    /// now on, what is published there is kept in the log. Idempotent; a log that exists
    /// with other retention arguments is an error naming it and the argument.
    pub async fn declare_log(&self, log: &EventLog) -> Result<()> {
        log.check()?;
        let exchange_durable = self
            .shared
            .config
            .queue
            .exchange_durable
            .unwrap_or(self.shared.config.queue.durable);
        let deadline = Instant::now() + Duration::from_secs(30);
        let what = format!("declaring event log `{}`", log.name);
        self.shared
            .connector
            .with_channel(deadline, &what, |ch| async move {
                crate::amqp::topology::declare_log(&ch, log, exchange_durable).await
            })
            .await
            .map_err(|e| match log.partitions {
                Some(_) => plugin_missing(e, &log.name),
                None => e,
            })
    }

    /// Reads `consumer`'s log through the registered handlers, in order, until
    /// [`Handle::shutdown`]: history first, then live events (see [`StreamConsumer`]).
    /// Reconnects by itself; fails at once if the log does not exist or the handler set
    /// names an unknown action.
    pub async fn replay(&self, consumer: StreamConsumer) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        self.read_any(consumer, None).await
    }

    /// Starts reading `consumer`'s log in a task of its own, as [`Handle::replay`] does;
    /// returns once the reader is subscribed to the log: what is published from now on is
    /// read after the history. Fails with the reader's error if it ends first (no such
    /// log, an unknown action). The returned [`Consumer`] runs until
    /// [`Handle::shutdown`]; [`Consumer::join`] waits for its end.
    pub async fn start_replay(&self, consumer: StreamConsumer) -> Result<Consumer> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let handle = self.clone();
        started(consumer.label(), |ready| {
            tokio::spawn(async move { handle.read_any(consumer, Some(ready)).await })
        })
        .await
    }

    /// Reads a log, or a partitioned log's partitions: this instance's share of them for
    /// a named consumer, all of them for an unnamed one.
    async fn read_any(&self, consumer: StreamConsumer, ready: Option<Ready>) -> Result<()> {
        let Some(n) = consumer.partitions else {
            return self
                .read_log(consumer, ready, self.shared.shutdown.clone())
                .await;
        };
        if consumer.name.is_some() {
            let interval = consumer.rebalance_interval;
            let work = Arc::new(LogPartitions {
                handle: self.clone(),
                consumer,
            });
            return member::run(self.shared.clone(), work, interval, ready).await;
        }
        // Unnamed: every partition here, ready once each reader is.
        let mut readers = Vec::new();
        let mut subscribed = Vec::new();
        // One reader failing for good stops the others.
        let all = self.shared.shutdown.child_token();
        for index in 0..n {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let handle = self.clone();
            let one = consumer.partition(index);
            let stop = all.clone();
            readers.push(tokio::spawn(async move {
                handle.read_log(one, Some(tx), stop).await
            }));
            subscribed.push(rx);
        }
        if let Some(ready) = ready
            && futures_util::future::try_join_all(subscribed).await.is_ok()
        {
            let _ = ready.send(());
        }
        let mut result = Ok(());
        for reader in readers {
            if let Err(e) = crate::api::consumer::ended(&consumer.log, reader.await)
                && result.is_ok()
            {
                all.cancel();
                result = Err(e);
            }
        }
        result
    }

    /// Reads one log (or one partition) until `stop`.
    pub(crate) async fn read_log(
        &self,
        consumer: StreamConsumer,
        ready: Option<Ready>,
        stop: CancellationToken,
    ) -> Result<()> {
        if stop.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let ready = parking_lot::Mutex::new(ready);
        let client = &self.shared;
        let _running = client.consumer_started();
        let label = consumer.label();
        let slot = client.consumer_slot(&label);
        let _end = EndGuard(&slot);
        let result = async {
            let routes = registry::routes(&label, consumer.handling.actions())?;
            let settings = consumer.resolve(&client.config.queue, &client.config.retry);
            consumer.check(&settings)?;
            // The dead-letter queue exists before the first dead letter, so operators
            // (and tools reading it) find it from the start.
            let deadline = Instant::now() + Duration::from_secs(30);
            let what = format!("declaring the dead-letter queue of `{label}`");
            client
                .connector
                .with_channel(deadline, &what, |ch| {
                    let settings = &settings;
                    async move {
                        crate::amqp::topology::declare_dead_letter_queue(&ch, settings).await
                    }
                })
                .await?;
            let policy = QueuePolicy::new(&label, routes, settings, client.config.state.clone())
                .with_layers(client.layers.lock().around(&Default::default()));
            policy.check()?;
            run(StreamRun {
                streams: &self.streams,
                transport: &**client,
                spec: &consumer,
                policy: &policy,
                slot: &slot,
                shutdown: &stop,
                abort: &client.abort,
                trace_propagation: client.config.trace_propagation,
                max_reconnect_delay: client.config.max_reconnect_delay,
                ready: &ready,
            })
            .await
        }
        .await;
        match &result {
            Ok(()) => slot.set(ConsumerState::Stopped),
            Err(e) => {
                tracing::error!(log = %consumer.log, error = %e, "stream consumer failed");
                slot.error(ConsumerState::Failed, e);
            }
        }
        result
    }
}
