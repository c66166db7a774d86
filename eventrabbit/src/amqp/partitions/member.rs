//! One instance's share of [`Partitioned`] work: each instance consumes a members queue
//! (so any of them can count the live instances by its consumer count), takes free
//! partitions up to its share (`ceil(partitions / instances)`) as the exclusive consumer
//! of their lease queues, and hands over the partitions beyond its share. A partition is
//! handed over only after the handlers running on it finished: no other instance can
//! start on a key still running here.

use super::Partitioned;
use crate::amqp::client::Client;
use crate::amqp::delivery::Ready;
use crate::error::{Error, Result};
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
    work: Arc<dyn Partitioned>,
    held: BTreeMap<u16, Held>,
    /// Where this instance starts looking for free partitions (spreads the first picks).
    offset: u16,
    /// The channel consuming the members queue, and that consumer (cancelled when
    /// dropped): the instance counts as live while they are open.
    channel: Option<(lapin::Channel, lapin::Consumer)>,
    declared: bool,
    /// Whether the partitions were ever declared: from then on, failures are weather.
    ever_declared: bool,
    slot: Arc<ConsumerSlot>,
}

/// Takes part in `work` until shutdown; `ready` is told after the first round (the
/// partitions declared, this instance counted, its first partitions taken).
pub(crate) async fn run(
    shared: Arc<Client>,
    work: Arc<dyn Partitioned>,
    rebalance_interval: Duration,
    mut ready: Option<Ready>,
) -> Result<()> {
    work.check()?;
    let _running = shared.consumer_started();
    let slot = shared.consumer_slot(&work.label());
    let _end = EndGuard(&slot);
    let mut tick = tokio::time::interval(rebalance_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut me = Member {
        offset: fastrand::u16(..work.count()),
        shared: shared.clone(),
        work,
        held: BTreeMap::new(),
        channel: None,
        declared: false,
        ever_declared: false,
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
            Err(e) if e.is_transient() || me.ever_declared => {
                tracing::warn!(partitions = %me.work.label(), error = %e, "could not rebalance; trying again");
                slot.error(ConsumerState::Recovering, &e);
                me.channel = None;
                // Declared again: what a broker restart lost (non-durable queues) is back.
                me.declared = false;
            }
            Err(e) => break Err(e),
        }
    };
    me.stop_all().await;
    match &result {
        Ok(()) => slot.set(ConsumerState::Stopped),
        Err(e) => {
            tracing::error!(partitions = %me.work.label(), error = %e, "partitioned consumer failed");
            slot.error(ConsumerState::Failed, e);
        }
    }
    result
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
        let count = u32::from(self.work.count());
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
            let n = self.work.count();
            order.sort_by_key(|i| (i + n - self.offset) % n);
            for index in order.into_iter().skip(share) {
                if let Some(h) = self.held.get_mut(&index) {
                    tracing::info!(partition = %self.work.slot_name(index), members, share, "handing the partition over");
                    h.releasing = true;
                    h.stop.cancel();
                }
            }
        } else {
            let mut wanted = share - active.len();
            for step in 0..self.work.count() {
                if wanted == 0 {
                    break;
                }
                let index = (self.offset + step) % self.work.count();
                if self.held.contains_key(&index) || self.consumers_of(index).await? > 0 {
                    continue;
                }
                tracing::info!(partition = %self.work.slot_name(index), members, share, "taking the partition");
                self.take(index);
                wanted -= 1;
            }
        }
        Ok(())
    }

    /// Declares every partition and the lease queues.
    async fn declare(&mut self, deadline: Instant) -> Result<()> {
        let what = format!("declaring the partitions of {}", self.work.label());
        let work = self.work.clone();
        self.shared
            .connector
            .with_channel(deadline, &what, |ch| async move { work.declare(ch).await })
            .await?;
        self.ever_declared = true;
        Ok(())
    }

    /// The live instances: consumers of the members queue (this one included, its
    /// consumer made first if its channel is gone).
    async fn count_members(&mut self, deadline: Instant) -> Result<u32> {
        let queue = self.work.members_queue();
        if self
            .channel
            .as_ref()
            .is_none_or(|(ch, _)| !ch.status().connected())
        {
            let what = format!("joining the members of {}", self.work.label());
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
        passive(ch, &self.work.lease_queue(index)).await
    }

    /// Starts consuming partition `index` as its only consumer.
    fn take(&mut self, index: u16) {
        let stop = self.shared.shutdown.child_token();
        let task = self.work.run(index, stop.clone());
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
            let queue = self.work.slot_name(index);
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
