//! The partition queues of a [`Partitions`] topology: each queue is its own lease (an
//! exclusive consumer), consumed through the ordinary consumer loop.

use super::Partitioned;
use crate::amqp::client::Client;
use crate::amqp::{consumer, topology};
use crate::config::Partitions;
use crate::error::{Error, Result};
use crate::handler::middleware::Layers;
use crate::telemetry::health::ConsumerSlot;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A [`Partitions`] topology consumed through this client.
pub(crate) struct QueuePartitions {
    pub(crate) shared: Arc<Client>,
    pub(crate) parts: Partitions,
    pub(crate) layers: Layers,
}

/// What health calls the partitioned consumer.
pub(crate) fn label(parts: &Partitions) -> String {
    format!("{} (partitions)", parts.exchange)
}

impl Partitioned for QueuePartitions {
    fn label(&self) -> String {
        label(&self.parts)
    }

    fn count(&self) -> u16 {
        self.parts.count
    }

    fn members_queue(&self) -> String {
        self.parts.members_queue()
    }

    fn lease_queue(&self, index: u16) -> String {
        self.parts.queue(index)
    }

    fn slot_name(&self, index: u16) -> String {
        self.parts.queue(index)
    }

    fn declare(&self, ch: lapin::Channel) -> BoxFuture<'_, Result<()>> {
        async move {
            for index in 0..self.parts.count {
                let channel = self.parts.channel(index);
                let settings =
                    channel.resolve(&self.shared.config.queue, &self.shared.config.retry);
                topology::declare(&ch, &channel, &settings).await?;
            }
            Ok(())
        }
        .map(|declared| declared.map_err(|e| plugin_missing(e, &self.parts.exchange)))
        .boxed()
    }

    fn run(&self, index: u16, stop: CancellationToken) -> JoinHandle<Result<()>> {
        tokio::spawn(consumer::run_until(
            self.shared.clone(),
            self.parts.channel(index),
            self.layers.clone(),
            None,
            stop,
        ))
    }

    fn check(&self) -> Result<()> {
        self.parts.check()?;
        let channel = self.parts.channel(0);
        let slot = Arc::new(ConsumerSlot::new(channel.queue.clone()));
        let layers = self.layers.clone();
        consumer::prepare(
            &self.shared,
            &channel,
            &slot,
            layers,
            None,
            CancellationToken::new(),
        )
        .map(|_| ())
    }
}

/// A broker without the consistent-hash exchange refuses its type (closing the
/// connection, which would look like weather): say which plugin to enable.
pub(crate) fn plugin_missing(e: Error, exchange: &str) -> Error {
    let text = e.to_string();
    if text.contains("x-consistent-hash") && text.contains("exchange type") {
        return Error::InvalidQueue {
            queue: exchange.to_owned(),
            reason: format!(
                "the broker does not know the consistent-hash exchange partitions route with: enable its plugin (`rabbitmq-plugins enable rabbitmq_consistent_hash_exchange`); the broker said: {text}"
            ),
        };
    }
    e
}
