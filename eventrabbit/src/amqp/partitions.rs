//! Consuming a [`Partitions`] topology together with other instances: each instance
//! consumes a members queue (so any of them can count the live instances by its consumer
//! count), takes free partitions up to its share (`ceil(partitions / instances)`) as an
//! exclusive consumer, and hands over the partitions beyond its share. A partition is
//! handed over only after the handlers running on it finished, its channel closing then:
//! what was delivered and not started goes back to the queue in order, and no other
//! instance can start on a key still running here.

use super::client::Client;
use super::consumer;
use super::delivery::Ready;
use super::topology;
use crate::config::{ConsumeChannel, Partitions};
use crate::error::{Error, Result};
use crate::handler::middleware::Layers;
use crate::telemetry::health::{ConsumerSlot, ConsumerState, EndGuard};
use futures_util::FutureExt;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A partition this instance consumes.
struct Held {
    stop: CancellationToken,
    task: JoinHandle<Result<()>>,
    /// Being handed over: it ends once its running handlers are done.
    releasing: bool,
}

/// This instance's view of the topology.
struct Member {
    shared: Arc<Client>,
    parts: Partitions,
    layers: Layers,
    held: BTreeMap<u16, Held>,
    /// Where this instance starts looking for free partitions (spreads the first picks).
    offset: u16,
    /// The channel consuming the members queue, and that consumer (cancelled when
    /// dropped): the instance counts as live while they are open.
    channel: Option<(lapin::Channel, lapin::Consumer)>,
    declared: bool,
    slot: Arc<ConsumerSlot>,
}

/// What health calls the partitioned consumer.
pub(crate) fn label(parts: &Partitions) -> String {
    format!("{} (partitions)", parts.exchange)
}

/// Takes part in consuming `parts` until shutdown; `ready` is told after the first round
/// (the topology declared, this instance counted, its first partitions taken).
pub(crate) async fn run(
    shared: Arc<Client>,
    parts: Partitions,
    layers: Layers,
    mut ready: Option<Ready>,
) -> Result<()> {
    parts.check()?;
    check(&shared, &parts.channel(0), &layers)?;
    let _running = shared.consumer_started();
    let slot = shared.consumer_slot(&label(&parts));
    let _end = EndGuard(&slot);
    let mut tick = tokio::time::interval(parts.rebalance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut me = Member {
        offset: fastrand::u16(..parts.count),
        shared: shared.clone(),
        parts,
        layers,
        held: BTreeMap::new(),
        channel: None,
        declared: false,
        slot: slot.clone(),
    };
    let result = loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.shutdown.cancelled() => break Ok(()),
        }
        match me.round().await {
            Ok(()) => {
                if slot.state() != ConsumerState::Running {
                    slot.running();
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
            // Once the topology is declared, what fails is weather (a lost channel, the
            // members queue gone with its last consumer): started over next round.
            Err(e) if e.is_transient() || me.declared => {
                tracing::warn!(exchange = %me.parts.exchange, error = %e, "partitions: could not rebalance; trying again");
                slot.error(ConsumerState::Recovering, &e);
                me.channel = None;
            }
            Err(e) => break Err(e),
        }
    };
    me.stop_all().await;
    match &result {
        Ok(()) => slot.set(ConsumerState::Stopped),
        Err(e) => {
            tracing::error!(exchange = %me.parts.exchange, error = %e, "partitioned consumer failed");
            slot.error(ConsumerState::Failed, e);
        }
    }
    result
}

/// Fails as every partition would: unknown actions, missing state, a retry policy a keyed
/// consumer cannot run, names that do not fit.
fn check(shared: &Arc<Client>, channel: &ConsumeChannel, layers: &Layers) -> Result<()> {
    let slot = Arc::new(ConsumerSlot::new(channel.queue.clone()));
    consumer::prepare(
        shared,
        channel,
        &slot,
        layers.clone(),
        None,
        CancellationToken::new(),
    )
    .map(|_| ())
}

impl Member {
    /// One look: declare what is missing, count the instances, reap the partitions that
    /// ended, then take or hand over partitions to reach this instance's share.
    async fn round(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        if !self.declared {
            self.declare(deadline).await?;
            self.declared = true;
        }
        let members = self.count_members(deadline).await?;
        self.reap();
        let count = u32::from(self.parts.count);
        let share = count.div_ceil(members.max(1)) as usize;
        let active: Vec<u16> = self
            .held
            .iter()
            .filter(|(_, h)| !h.releasing)
            .map(|(i, _)| *i)
            .collect();
        if active.len() > share {
            // Hands over the last ones in this instance's own order, keeping its first picks.
            let mut order = active;
            order.sort_by_key(|i| (i + self.parts.count - self.offset) % self.parts.count);
            for index in order.into_iter().skip(share) {
                if let Some(h) = self.held.get_mut(&index) {
                    tracing::info!(queue = %self.parts.queue(index), members, share, "handing the partition over");
                    h.releasing = true;
                    h.stop.cancel();
                }
            }
        } else {
            let mut wanted = share - active.len();
            for step in 0..self.parts.count {
                if wanted == 0 {
                    break;
                }
                let index = (self.offset + step) % self.parts.count;
                if self.held.contains_key(&index) || self.consumers_of(index).await? > 0 {
                    continue;
                }
                tracing::info!(queue = %self.parts.queue(index), members, share, "taking the partition");
                self.take(index);
                wanted -= 1;
            }
        }
        Ok(())
    }

    /// Declares every partition's queue and binding, and the exchange.
    async fn declare(&self, deadline: Instant) -> Result<()> {
        let what = format!(
            "declaring the partitions of exchange `{}`",
            self.parts.exchange
        );
        let shared = &self.shared;
        shared
            .connector
            .with_channel(deadline, &what, |ch| async move {
                for index in 0..self.parts.count {
                    let channel = self.parts.channel(index);
                    let settings = channel.resolve(&shared.config.queue, &shared.config.retry);
                    topology::declare(&ch, &channel, &settings).await?;
                }
                Ok(())
            })
            .await
            .map_err(|e| plugin_missing(e, &self.parts.exchange))
    }

    /// The live instances: consumers of the members queue (this one included, its
    /// consumer made first if its channel is gone).
    async fn count_members(&mut self, deadline: Instant) -> Result<u32> {
        let queue = self.parts.members_queue();
        if self
            .channel
            .as_ref()
            .is_none_or(|(ch, _)| !ch.status().connected())
        {
            let what = format!(
                "joining the members of partitions `{}`",
                self.parts.exchange
            );
            let ch = self.shared.connector.channel(Some(deadline), &what).await?;
            declare_members(&ch, &queue).await?;
            let consumer = ch
                .basic_consume(
                    queue.as_str().into(),
                    "member".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..BasicConsumeOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(Error::amqp(what))?;
            self.channel = Some((ch, consumer));
        }
        let (ch, _) = self.channel.as_ref().expect("opened above");
        let members = passive(ch, &queue).await?;
        Ok(members.max(1))
    }

    /// How many consumers partition `index` has (0: free to take).
    async fn consumers_of(&self, index: u16) -> Result<u32> {
        let (ch, _) = self.channel.as_ref().expect("opened by count_members");
        passive(ch, &self.parts.queue(index)).await
    }

    /// Starts consuming partition `index` as its only consumer.
    fn take(&mut self, index: u16) {
        let stop = self.shared.shutdown.child_token();
        let task = tokio::spawn(consumer::run_until(
            self.shared.clone(),
            self.parts.channel(index),
            self.layers.clone(),
            None,
            stop.clone(),
        ));
        self.held.insert(
            index,
            Held {
                stop,
                task,
                releasing: false,
            },
        );
    }

    /// Forgets the partitions whose consumer ended (handed over, refused because another
    /// instance took it first, or failed: it is taken again later if still free).
    fn reap(&mut self) {
        let ended: Vec<u16> = self
            .held
            .iter()
            .filter(|(_, h)| h.task.is_finished())
            .map(|(i, _)| *i)
            .collect();
        for index in ended {
            let Some(held) = self.held.remove(&index) else {
                continue;
            };
            let queue = self.parts.queue(index);
            self.shared.forget_slot(&queue);
            if let Some(Ok(Err(e))) = held.task.now_or_never()
                && !e.is_exclusive_use()
            {
                tracing::warn!(queue = %queue, error = %e, "partition consumer ended; it is taken again while free");
                self.slot.note(format!("partition `{queue}`: {e}"));
            }
        }
    }

    /// Stops every partition (shutdown): each ends after its running handlers.
    async fn stop_all(&mut self) {
        for h in self.held.values() {
            h.stop.cancel();
        }
        for (_, h) in std::mem::take(&mut self.held) {
            let _ = h.task.await;
        }
        if let Some((ch, _)) = self.channel.take() {
            let _ = ch.close(200, "shutdown".into()).await;
        }
    }
}

/// Declares the members queue: not durable, deleted with its last consumer.
async fn declare_members(ch: &lapin::Channel, queue: &str) -> Result<()> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|_| ())
    .map_err(Error::amqp(format!("declaring queue `{queue}`")))
}

/// The consumer count of `queue`, which exists.
async fn passive(ch: &lapin::Channel, queue: &str) -> Result<u32> {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.consumer_count())
    .map_err(Error::amqp(format!(
        "counting the consumers of queue `{queue}`"
    )))
}

/// A broker without the consistent-hash exchange refuses its type (closing the
/// connection, which would look like weather): say which plugin to enable.
fn plugin_missing(e: Error, exchange: &str) -> Error {
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
