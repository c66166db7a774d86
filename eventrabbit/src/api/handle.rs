//! [`Handle`]: running consumers, shutting down, health and redrive.

use crate::amqp::client::Client;
use crate::amqp::partitions::member;
use crate::amqp::partitions::queues::{self, QueuePartitions};
use crate::amqp::{consumer, redrive, topology};
use crate::api::consumer::{Consumer, ended};
use crate::config::{ConsumeChannel, Partitions};
use crate::error::{Error, Result};
use crate::handler::middleware::{Layers, Middleware};
use crate::handler::registry;
use crate::pipeline::policy::QueuePolicy;
use crate::pipeline::redrive::{Redrive, RedriveReport};
use crate::stream::connect::Streams;
use crate::telemetry::health::Health;
use crate::wire::limits;
use std::sync::Arc;
use std::time::Duration;

/// Aborts a consumer's task when dropped while it holds it (a [`Handle::start`] given up).
struct AbortUnlessStarted(Option<tokio::task::JoinHandle<Result<()>>>);

impl Drop for AbortUnlessStarted {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Spawns a consumer's task with `spawn` and waits until it says it is consuming (or ends
/// first, with its error).
pub(super) async fn started(
    queue: String,
    spawn: impl FnOnce(tokio::sync::oneshot::Sender<()>) -> tokio::task::JoinHandle<Result<()>>,
) -> Result<Consumer> {
    let (ready, consuming) = tokio::sync::oneshot::channel();
    // A start given up before the consumer runs stops it.
    let mut guard = AbortUnlessStarted(Some(spawn(ready)));
    let outcome = consuming.await;
    let task = guard.0.take().expect("the task is there until started");
    match outcome {
        Ok(()) => Ok(Consumer::new(queue, task)),
        Err(_) => {
            ended(&queue, task.await)?;
            // Ended without an error before consuming: shut down meanwhile.
            Err(Error::Shutdown)
        }
    }
}

/// Runs consumers. Cheap to clone.
///
/// ```no_run
/// use eventrabbit::{Config, ConsumeChannel, ExchangeKind, build_event_dependencies};
/// # async fn f() -> eventrabbit::Result<()> {
/// let (_events, handle) = build_event_dependencies("amqp://127.0.0.1:5672/%2f", Config::default()).await?;
/// let users = ConsumeChannel::new("users").exchange("user", ExchangeKind::Fanout);
/// let consuming = tokio::spawn({
///     let handle = handle.clone();
///     async move { handle.consume(users).await }
/// });
/// // ... until the service stops:
/// handle.shutdown().await;
/// consuming.await.expect("consumer task")?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    pub(super) shared: Arc<Client>,
    pub(super) streams: Arc<Streams>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Client>, streams: Arc<Streams>) -> Self {
        Self { shared, streams }
    }

    /// Declares and consumes `channel` until [`Handle::shutdown`]; reconnects by itself
    /// when the connection drops. Fails at once if its topology is refused or its handler
    /// set names an unknown action.
    pub async fn consume(&self, channel: ConsumeChannel) -> Result<()> {
        self.consume_with(channel, Layers::default()).await
    }

    /// Like [`Handle::consume`], with `layers` around every handler of this queue (inside
    /// the layers given to [`Handle::layer`]).
    pub async fn consume_with(&self, channel: ConsumeChannel, layers: Layers) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        consumer::run(self.shared.clone(), channel, layers, None).await
    }

    /// Declares `channel`'s topology and starts consuming it in a task of its own;
    /// returns once the broker delivers to it: the queue, its bindings and its
    /// dead-letter queue exist and `basic.consume` is active, so a publish made right after
    /// reaches it. Fails with the consumer's error if it ends first (a refused topology,
    /// an unknown action). While the broker is away it keeps waiting (bound it with
    /// `tokio::time::timeout` if you wish). The returned [`Consumer`] runs until
    /// [`Handle::shutdown`]; [`Consumer::join`] waits for its end.
    ///
    /// ```no_run
    /// use eventrabbit::{Config, ConsumeChannel, ExchangeKind, build_event_dependencies};
    /// # async fn f() -> eventrabbit::Result<()> {
    /// let (events, handle) = build_event_dependencies("amqp://127.0.0.1:5672/%2f", Config::default()).await?;
    /// let users = handle.start(ConsumeChannel::new("users").exchange("user", ExchangeKind::Fanout)).await?;
    /// events.publish("user", "", "USER_CREATED", &serde_json::json!({"id": 1})).await?; // reaches it
    /// handle.shutdown().await;
    /// users.join().await?;
    /// # Ok(()) }
    /// ```
    pub async fn start(&self, channel: ConsumeChannel) -> Result<Consumer> {
        self.start_with(channel, Layers::default()).await
    }

    /// Like [`Handle::start`], with `layers` around every handler of this queue.
    pub async fn start_with(&self, channel: ConsumeChannel, layers: Layers) -> Result<Consumer> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let queue = channel.queue.clone();
        let shared = self.shared.clone();
        started(queue, |ready| {
            tokio::spawn(consumer::run(shared, channel, layers, Some(ready)))
        })
        .await
    }

    /// Takes part in consuming a partitioned topology (see [`Partitions`]) until
    /// [`Handle::shutdown`]: every instance running this shares the partitions, each
    /// partition consumed by one instance at a time, taken over when its instance goes.
    /// Fails at once as [`Handle::consume`] would for a partition's channel (an unknown
    /// action, a retry policy a keyed consumer cannot run).
    pub async fn consume_partitions(&self, partitions: Partitions) -> Result<()> {
        self.consume_partitions_with(partitions, Layers::default())
            .await
    }

    /// Like [`Handle::consume_partitions`], with `layers` around every handler.
    pub async fn consume_partitions_with(
        &self,
        partitions: Partitions,
        layers: Layers,
    ) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let interval = partitions.rebalance_interval;
        let work = Arc::new(QueuePartitions {
            shared: self.shared.clone(),
            parts: partitions,
            layers,
        });
        member::run(self.shared.clone(), work, interval, None).await
    }

    /// Like [`Handle::consume_partitions`], in a task of its own; returns once the
    /// topology is declared, this instance counts as a member and has taken its first
    /// partitions (a publish made right after is routed to a partition queue).
    pub async fn start_partitions(&self, partitions: Partitions) -> Result<Consumer> {
        self.start_partitions_with(partitions, Layers::default())
            .await
    }

    /// Like [`Handle::start_partitions`], with `layers` around every handler.
    pub async fn start_partitions_with(
        &self,
        partitions: Partitions,
        layers: Layers,
    ) -> Result<Consumer> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        let label = queues::label(&partitions);
        let interval = partitions.rebalance_interval;
        let work = Arc::new(QueuePartitions {
            shared: self.shared.clone(),
            parts: partitions,
            layers,
        });
        let shared = self.shared.clone();
        started(label, |ready| {
            tokio::spawn(member::run(shared, work, interval, Some(ready)))
        })
        .await
    }

    /// Declares `channel`'s topology (exchanges, queue, bindings, dead-letter queue)
    /// without consuming: for a publisher that must not publish into nowhere before its
    /// consumers start, or a deployment step. Fails as `consume` would on a refused or
    /// invalid topology.
    pub async fn declare(&self, channel: &ConsumeChannel) -> Result<()> {
        let settings = channel.resolve(&self.shared.config.queue, &self.shared.config.retry);
        channel.check(&settings)?;
        let what = format!("declaring the topology of queue `{}`", channel.queue);
        let deadline = tokio::time::Instant::now() + self.shared.config.publish_timeout;
        let declaring = self.shared.connector.with_channel(deadline, &what, |ch| {
            let settings = &settings;
            async move { topology::declare(&ch, channel, settings).await }
        });
        match tokio::time::timeout_at(deadline, declaring).await {
            Ok(declared) => declared,
            Err(_) => Err(Error::Unavailable(self.shared.config.publish_timeout, what)),
        }
    }

    /// Wraps every handler of every queue consumed from now on (and of logs replayed) in
    /// `layer`, outside the layers given before it and those of
    /// [`Handle::consume_with`]. See [`Middleware`].
    pub fn layer(&self, layer: impl Middleware) {
        self.shared.layers.lock().push(Arc::new(layer));
    }

    /// Stops every consumer: no new deliveries, in-flight handlers finish and are
    /// acknowledged, publishes in flight get their confirms, then the connection closes.
    /// Returns when done.
    pub async fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.consumers_stopped().await;
        // Publishes already sent get their confirms before the channel closes.
        self.shared.publisher.flushed().await;
        self.shared.publisher.close().await;
        self.shared.connector.close().await;
    }

    /// Like [`Handle::shutdown`], but gives up waiting for handlers after `deadline`:
    /// then every `consume()` returns at once (the deliveries of handlers still running
    /// are redelivered by the broker) and the connection closes.
    pub async fn shutdown_within(&self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?deadline, "shutdown deadline passed; closing anyway");
            self.shared.abort.cancel();
            let closing = async {
                self.shared.consumers_stopped().await;
                self.shared.publisher.close().await;
                self.shared.connector.close().await;
            };
            // Closing politely is bounded too: a broker that does not answer is left.
            let _ = tokio::time::timeout(Duration::from_secs(2), closing).await;
        }
    }

    /// The connection's and every consumer's state, for readiness probes.
    pub async fn health(&self) -> Health {
        Health::new(
            self.shared.connector.node(),
            self.shared.connector.blocked(),
            self.shared.consumer_health(),
        )
    }

    /// Moves up to `max` dead-lettered messages of `queue` back to it (at most those in
    /// the dead-letter queue when it starts). Returns how many moved; fails if it had to
    /// stop before moving all it was asked to (what it could not move stays dead-lettered).
    pub async fn redrive_dead_letters(&self, queue: &str, max: usize) -> Result<usize> {
        let report = self.redrive(queue, Redrive::new().max(max)).await?;
        match report.error {
            None => Ok(report.moved),
            Some(error) => Err(Error::Redrive {
                queue: queue.to_owned(),
                moved: report.moved,
                error,
            }),
        }
    }

    /// Moves `queue`'s dead letters back to it, or in a dry run says which of them today's
    /// handlers would take, grouped by dead-letter code and action.
    ///
    /// ```no_run
    /// # async fn run(handle: eventrabbit::Handle) -> eventrabbit::Result<()> {
    /// use eventrabbit::Redrive;
    /// let report = handle.redrive("orders", Redrive::new().dry_run(true)).await?;
    /// for group in &report.groups {
    ///     println!("{} {:?}: {} of {} would pass", group.code, group.action, group.would_pass, group.count);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn redrive(&self, queue: &str, how: Redrive) -> Result<RedriveReport> {
        limits::check_name("queue", queue)?;
        let dlq = self.dead_letter_queue(queue);
        limits::check_name("dead-letter queue", &dlq)?;
        let settings = ConsumeChannel::new(queue)
            .resolve(&self.shared.config.queue, &self.shared.config.retry);
        let routes = registry::routes(queue, None)?;
        let policy = QueuePolicy::new(queue, routes, settings, self.shared.config.state.clone());
        redrive::redrive(&self.shared.connector, &policy, &dlq, how).await
    }

    /// The name of the dead-letter queue of `queue`.
    #[must_use]
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.shared.config.queue.dead_letter_suffix)
    }
}
