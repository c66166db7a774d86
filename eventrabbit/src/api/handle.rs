//! [`Handle`]: running consumers, shutting down, health and redrive.

use crate::amqp::client::Client;
use crate::amqp::{consumer, redrive};
use crate::config::ConsumeChannel;
use crate::error::{Error, Result};
use crate::telemetry::health::Health;
use std::sync::Arc;
use std::time::Duration;

/// Runs consumers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Handle {
    shared: Arc<Client>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Client>) -> Self {
        Self { shared }
    }

    /// Declares and consumes `channel` until [`Handle::shutdown`]; reconnects by itself
    /// when the connection drops. Fails at once if its topology is refused or its handler
    /// set names an unknown action.
    pub async fn consume(&self, channel: ConsumeChannel) -> Result<()> {
        if self.shared.shutdown.is_cancelled() {
            return Err(Error::Shutdown);
        }
        consumer::run(self.shared.clone(), channel).await
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

    /// Like [`Handle::shutdown`], but gives up waiting for handlers after `deadline`.
    pub async fn shutdown_within(&self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(?deadline, "shutdown deadline passed; closing anyway");
            self.shared.connector.close().await;
        }
    }

    /// The connection's and every consumer's state, for readiness probes.
    pub async fn health(&self) -> Health {
        Health {
            connected: self.shared.connector.is_connected(),
            blocked: self.shared.connector.blocked(),
            consumers: self.shared.consumer_health(),
        }
    }

    /// Moves up to `max` dead-lettered messages of `queue` back to it. Returns how many moved.
    pub async fn redrive_dead_letters(&self, queue: &str, max: usize) -> Result<usize> {
        let dlq = format!("{queue}{}", self.shared.config.queue.dead_letter_suffix);
        redrive::redrive(&self.shared.publisher, &dlq, queue, max).await
    }

    /// The name of the dead-letter queue of `queue`.
    #[must_use]
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.shared.config.queue.dead_letter_suffix)
    }
}
