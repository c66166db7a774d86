//! The partitions of a partitioned event log, read by the instances of one named
//! [`StreamConsumer`]: partition `i` is held by the exclusive consumer of its lease queue
//! `<log>.p<i>.<name>.lease` and read, while held, from the position stored for it.
//! Handing it over stops the reader (storing its position) before the lease goes.

use super::handle::Handle;
use crate::amqp::partitions::Partitioned;
use crate::config::StreamConsumer;
use crate::error::{Error, Result};
use crate::handler::registry;
use crate::pipeline::policy::QueuePolicy;
use crate::wire::limits::check_name;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A named consumer of a partitioned log, shared with the other instances running it.
pub(crate) struct LogPartitions {
    pub(crate) handle: Handle,
    pub(crate) consumer: StreamConsumer,
}

impl LogPartitions {
    fn name(&self) -> &str {
        self.consumer.name.as_deref().unwrap_or_default()
    }
}

impl Partitioned for LogPartitions {
    fn label(&self) -> String {
        format!("{} (partitions)", self.consumer.label())
    }

    fn count(&self) -> u16 {
        self.consumer.partitions.unwrap_or(1)
    }

    fn members_queue(&self) -> String {
        format!("{}.{}.members", self.consumer.log, self.name())
    }

    fn lease_queue(&self, index: u16) -> String {
        format!(
            "{}.{}.lease",
            self.consumer.partition(index).log,
            self.name()
        )
    }

    fn slot_name(&self, index: u16) -> String {
        self.consumer.partition(index).label()
    }

    fn declare(&self, ch: lapin::Channel) -> BoxFuture<'_, Result<()>> {
        async move {
            for index in 0..self.count() {
                let stream = self.consumer.partition(index).log;
                let exists = ch
                    .queue_declare(
                        stream.as_str().into(),
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await;
                if exists.is_err() {
                    return Err(Error::InvalidQueue {
                        queue: self.consumer.log.clone(),
                        reason: format!(
                            "its partition `{stream}` does not exist: declare the log with `EventLog::partitions({})` (`Handle::declare_log`) first",
                            self.count()
                        ),
                    });
                }
                let lease = self.lease_queue(index);
                ch.queue_declare(
                    lease.as_str().into(),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(Error::amqp(format!("declaring lease queue `{lease}`")))?;
            }
            Ok(())
        }
        .boxed()
    }

    fn run(&self, index: u16, stop: CancellationToken) -> JoinHandle<Result<()>> {
        let handle = self.handle.clone();
        let reader = self.consumer.partition(index);
        let lease = self.lease_queue(index);
        tokio::spawn(async move {
            let what = format!("taking the lease `{lease}`");
            let deadline = Instant::now() + Duration::from_secs(30);
            let ch = handle
                .shared
                .connector
                .channel(Some(deadline), &what)
                .await?;
            let mut held = ch
                .basic_consume(
                    lease.as_str().into(),
                    "lease".into(),
                    BasicConsumeOptions {
                        exclusive: true,
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(Error::amqp(what))?;
            let reading_stop = stop.child_token();
            let reading = handle.read_log(reader, None, reading_stop.clone());
            tokio::pin!(reading);
            let result = tokio::select! {
                read = &mut reading => read,
                () = async { while let Some(Ok(_)) = held.next().await {} } => {
                    // The lease's channel is gone (its connection dropped): another
                    // instance may take the partition, so stop reading it now.
                    reading_stop.cancel();
                    let _ = reading.await;
                    Err(Error::Stream(format!("lost the lease `{lease}`; reading stopped")))
                }
            };
            let _ = ch.close(200, "released".into()).await;
            result
        })
    }

    fn check(&self) -> Result<()> {
        // The longest names this consumer adds, before the reader's own.
        check_name("lease queue", &self.lease_queue(self.count() - 1))?;
        check_name("members queue", &self.members_queue())?;
        let label = self.consumer.label();
        let client = &self.handle.shared;
        let routes = registry::routes(&label, self.consumer.handling.actions())?;
        let one = self.consumer.partition(self.count() - 1);
        let settings = one.resolve(&client.config.queue, &client.config.retry);
        one.check(&settings)?;
        QueuePolicy::new(&label, routes, settings, client.config.state.clone()).check()
    }
}
