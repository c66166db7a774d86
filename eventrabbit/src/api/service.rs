//! [`Service`]: what every service's `main` repeats, once: start each consumer, say it is
//! ready, wait for Ctrl-C or SIGTERM, shut down gracefully within a deadline, and return
//! the first consumer error. Optional: [`Handle::start`] and [`Handle::shutdown_within`]
//! stay public for services that want to do it their own way.

use super::consumer::Consumer;
use super::handle::Handle;
use crate::config::{ConsumeChannel, Partitions, StreamConsumer};
use crate::error::Result;
use crate::handler::middleware::Layers;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use std::future::Future;
use std::time::Duration;

/// Runs a service's consumers until Ctrl-C or SIGTERM.
///
/// ```no_run
/// use eventrabbit::{Config, ConsumeChannel, Service, build_event_dependencies};
/// # async fn f() -> eventrabbit::Result<()> {
/// let (_events, handle) = build_event_dependencies("amqp://127.0.0.1:5672/%2f", Config::default()).await?;
/// Service::new(&handle)
///     .consume(ConsumeChannel::new("orders"))
///     .consume(ConsumeChannel::new("payments"))
///     .run() // starts both, then waits for Ctrl-C or SIGTERM and shuts down within 30 s
///     .await
/// # }
/// ```
#[derive(Debug)]
pub struct Service {
    handle: Handle,
    consumers: Vec<Part>,
    shutdown_within: Duration,
}

impl Service {
    /// The default time handlers get to finish at shutdown.
    pub const DEFAULT_SHUTDOWN_WITHIN: Duration = Duration::from_secs(30);

    /// A service running its consumers on `handle`'s connection.
    #[must_use]
    pub fn new(handle: &Handle) -> Self {
        Self {
            handle: handle.clone(),
            consumers: Vec::new(),
            shutdown_within: Self::DEFAULT_SHUTDOWN_WITHIN,
        }
    }

    /// Consumes `channel`.
    #[must_use]
    pub fn consume(self, channel: ConsumeChannel) -> Self {
        self.consume_with(channel, Layers::default())
    }

    /// Consumes `channel` with `layers` around its handlers.
    #[must_use]
    pub fn consume_with(mut self, channel: ConsumeChannel, layers: Layers) -> Self {
        self.consumers.push(Part::Queue(channel, layers));
        self
    }

    /// Takes part in consuming a partitioned topology (see
    /// [`Handle::consume_partitions`]): every instance of the service shares its
    /// partitions.
    #[must_use]
    pub fn partitions(self, partitions: Partitions) -> Self {
        self.partitions_with(partitions, Layers::default())
    }

    /// [`Service::partitions`] with `layers` around its handlers.
    #[must_use]
    pub fn partitions_with(mut self, partitions: Partitions, layers: Layers) -> Self {
        self.consumers.push(Part::Partitions(partitions, layers));
        self
    }

    /// Also reads `consumer`'s event log through the handlers (see
    /// [`Handle::start_replay`]): a projection kept current beside the queues.
    #[must_use]
    pub fn replay(mut self, consumer: StreamConsumer) -> Self {
        self.consumers.push(Part::Log(consumer));
        self
    }

    /// How long in-flight handlers get to finish at shutdown (30 s by default); after it,
    /// their deliveries are left to the broker, which redelivers them.
    #[must_use]
    pub fn shutdown_within(mut self, deadline: Duration) -> Self {
        self.shutdown_within = deadline;
        self
    }

    /// Starts every consumer, then runs until Ctrl-C or SIGTERM (or until a consumer ends
    /// on an error), and shuts down gracefully. Returns the first consumer error, if any.
    pub async fn run(self) -> Result<()> {
        self.run_until(stop_signal()).await
    }

    /// [`Service::run`], stopping when `stop` completes instead of on a signal. `stop` is
    /// first polled once every consumer is consuming, so it may publish what they handle.
    pub async fn run_until(self, stop: impl Future<Output = ()>) -> Result<()> {
        let Service {
            handle,
            consumers,
            shutdown_within,
        } = self;
        let mut running: Vec<Consumer> = Vec::with_capacity(consumers.len());
        for part in consumers {
            let starting = match part {
                Part::Queue(channel, layers) => handle.start_with(channel, layers).await,
                Part::Log(consumer) => handle.start_replay(consumer).await,
                Part::Partitions(partitions, layers) => {
                    handle.start_partitions_with(partitions, layers).await
                }
            };
            match starting {
                Ok(consumer) => running.push(consumer),
                Err(e) => {
                    handle.shutdown_within(shutdown_within).await;
                    for consumer in running {
                        let _ = consumer.join().await;
                    }
                    return Err(e);
                }
            }
        }
        let queues: Vec<String> = running.iter().map(|c| c.queue().to_owned()).collect();
        tracing::info!(?queues, "service ready: every consumer is consuming");
        let mut ends: FuturesUnordered<_> = running.into_iter().map(Consumer::join).collect();
        let mut first_error = None;
        tokio::select! {
            () = stop => tracing::info!("stopping: shutting down gracefully"),
            Some(ended) = ends.next() => {
                if let Err(e) = ended {
                    tracing::error!(error = %e, "a consumer failed: shutting the service down");
                    first_error = Some(e);
                }
            }
        }
        handle.shutdown_within(shutdown_within).await;
        while let Some(ended) = ends.next().await {
            if let (Err(e), None) = (ended, &first_error) {
                first_error = Some(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// One thing a service consumes.
#[derive(Debug)]
enum Part {
    Queue(ConsumeChannel, Layers),
    Log(StreamConsumer),
    Partitions(Partitions, Layers),
}

/// Completes on Ctrl-C, or on SIGTERM (unix).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
