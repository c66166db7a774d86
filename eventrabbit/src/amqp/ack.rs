//! Acknowledgements of one consumer channel, coalesced: handlers finish in any order, and
//! contiguous runs of finished deliveries are acknowledged with one `basic.ack(multiple)`
//! once half the prefetch window has finished, or [`ACK_DELAY`] after the first of them
//! finished, whichever comes first. Acks are queued for the connection without being
//! awaited, so the delivery loop never waits for one.
//!
//! A delivery whose handler is slow does not hold back the others: once half the prefetch
//! window has finished above it, or [`ACK_DELAY`] after they finished, those are
//! acknowledged one by one.

use futures_util::FutureExt;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;

/// The longest a finished delivery waits for its acknowledgement to be sent.
///
/// It never holds deliveries back: half the prefetch window is acknowledged as soon as it
/// has finished, so the broker always has the other half to send. What it decides is how
/// small the batches get when each consumer sees a few deliveries at a time (many queues on
/// one connection): each `basic.ack` costs the broker's queue process a round of work, and
/// lapin some work per channel for every frame it writes. With 5 ms, 200 queues of 500
/// sent 6,092 acks where batches of 50 need 2,000 (issue 18, W5; see BENCHMARKS.md).
pub(crate) const ACK_DELAY: Duration = Duration::from_millis(40);

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done with: acknowledge.
    Ack,
    /// Not settled: give it back to the broker for redelivery.
    Requeue,
}

/// Where delivery tasks running apart from the delivery loop report how their delivery is
/// settled.
#[derive(Debug, Clone)]
pub(crate) struct Acks(mpsc::UnboundedSender<(u64, Settle)>);

impl Acks {
    pub(crate) fn settle(&self, tag: u64, how: Settle) {
        // A closed receiver means the channel is gone; the broker redelivers.
        let _ = self.0.send((tag, how));
    }
}

/// The acknowledgements of one consumer channel, owned by its delivery loop.
#[derive(Debug)]
pub(crate) struct Settlements {
    ch: Channel,
    queue: String,
    state: Coalescer,
    /// Flush once this many deliveries were settled since the last flush.
    batch: usize,
    /// Acknowledge alone the tags finished above a gap once this many wait.
    spill: usize,
    unflushed: usize,
    tx: Option<mpsc::UnboundedSender<(u64, Settle)>>,
    rx: mpsc::UnboundedReceiver<(u64, Settle)>,
}

impl Settlements {
    pub(crate) fn new(ch: Channel, queue: String, prefetch: u16) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let half = usize::from(prefetch / 2).max(1);
        Self {
            ch,
            queue,
            state: Coalescer::default(),
            batch: half,
            spill: half,
            unflushed: 0,
            tx: Some(tx),
            rx,
        }
    }

    /// A reporter for a delivery task that runs apart from the delivery loop.
    pub(crate) fn reporter(&self) -> Acks {
        Acks(
            self.tx
                .clone()
                .expect("reporters are handed out before closing"),
        )
    }

    /// Whether settled deliveries wait for their acknowledgement (those finished behind a
    /// delivery still running included).
    pub(crate) fn pending(&self) -> bool {
        self.unflushed > 0 || !self.state.waiting.is_empty()
    }

    /// Records how `tag` is settled; sends acknowledgements once a batch is full.
    pub(crate) fn settle(&mut self, tag: u64, how: Settle) {
        match how {
            Settle::Ack => self.state.finished(tag),
            Settle::Requeue => {
                let opts = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                let nack = self.ch.basic_nack(tag, opts);
                self.sent(nack.now_or_never(), "nack");
                self.state.settled_alone(tag);
            }
        }
        self.unflushed += 1;
        if self.unflushed >= self.batch {
            self.flush();
        }
    }

    /// The next settlement reported by a delivery task; `None` once closed and drained.
    pub(crate) async fn reported(&mut self) -> Option<(u64, Settle)> {
        self.rx.recv().await
    }

    /// Sends the acknowledgements of a full batch, without waiting for them to go out.
    pub(crate) fn flush(&mut self) {
        self.flush_with(self.spill);
    }

    /// Sends every acknowledgement due, including those of deliveries that finished
    /// behind one still running: none waits longer than [`ACK_DELAY`].
    pub(crate) fn flush_all(&mut self) {
        self.flush_with(1);
    }

    fn flush_with(&mut self, spill: usize) {
        self.unflushed = 0;
        for (tag, multiple) in self.state.flush(spill) {
            // The first poll queues the frame; the connection writes it in order.
            let ack = self.ch.basic_ack(tag, BasicAckOptions { multiple });
            self.sent(ack.now_or_never(), "ack");
        }
    }

    fn sent(&self, now: Option<lapin::Result<()>>, what: &str) {
        if let Some(Err(e)) = now {
            tracing::warn!(queue = %self.queue, error = %e, "{what} failed; the broker will redeliver");
        }
    }

    /// Shutdown: takes the settlements of the delivery tasks still running until the last
    /// of them ends, then sends every acknowledgement due (those finished above a gap
    /// included) and waits until it is written.
    pub(crate) async fn finish(mut self) {
        self.tx = None;
        while let Some((tag, how)) = self.rx.recv().await {
            self.settle(tag, how);
        }
        for (tag, multiple) in self.state.flush(1) {
            if let Err(e) = self.ch.basic_ack(tag, BasicAckOptions { multiple }).await {
                tracing::warn!(queue = %self.queue, error = %e, "ack failed; the broker will redeliver");
            }
        }
    }
}

/// Which delivery tags to acknowledge, given the order handlers finish in. Tags that
/// finish in order (the usual case) only extend a run; the sets hold the others.
#[derive(Debug, Default)]
struct Coalescer {
    /// Every tag up to this one is finished or settled; those above the last flush
    /// wait for the next one.
    run_end: u64,
    /// The highest tag of the run that still needs acknowledging: a multiple ack on it
    /// covers the run without naming a tag that was already acknowledged alone.
    run_unacked: Option<u64>,
    /// Finished above a gap, not acknowledged yet.
    waiting: BTreeSet<u64>,
    /// Settled above a gap without needing an ack: acknowledged one by one, or nacked.
    acked_alone: BTreeSet<u64>,
}

impl Coalescer {
    fn finished(&mut self, tag: u64) {
        if tag == self.run_end + 1 {
            self.run_end = tag;
            self.run_unacked = Some(tag);
            self.extend_run();
        } else if tag > self.run_end {
            self.waiting.insert(tag);
        }
    }

    /// `tag` was settled by other means (a nack): it needs no ack, and no multiple ack
    /// may name it.
    fn settled_alone(&mut self, tag: u64) {
        if tag == self.run_end + 1 {
            self.run_end = tag;
            self.extend_run();
        } else if tag > self.run_end {
            self.acked_alone.insert(tag);
        }
    }

    /// Takes into the run the tags right above it that were settled out of order.
    fn extend_run(&mut self) {
        while !(self.waiting.is_empty() && self.acked_alone.is_empty()) {
            let next = self.run_end + 1;
            if self.waiting.remove(&next) {
                self.run_unacked = Some(next);
            } else if !self.acked_alone.remove(&next) {
                break;
            }
            self.run_end = next;
        }
    }

    /// The acks to send: `(tag, multiple)`.
    fn flush(&mut self, spill: usize) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        if let Some(tag) = self.run_unacked.take() {
            out.push((tag, true));
        }
        if self.waiting.len() >= spill {
            for tag in std::mem::take(&mut self.waiting) {
                out.push((tag, false));
                self.acked_alone.insert(tag);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_runs_become_one_multiple_ack() {
        let mut c = Coalescer::default();
        for t in [2, 3, 1, 5] {
            c.finished(t);
        }
        assert_eq!(c.flush(100), vec![(3, true)]);
        c.finished(4);
        assert_eq!(c.flush(100), vec![(5, true)]);
        assert_eq!(c.flush(100), vec![]);
    }

    #[test]
    fn a_slow_delivery_does_not_hold_back_the_window() {
        let mut c = Coalescer::default();
        for t in 2..=4 {
            c.finished(t);
        }
        // Tag 1 is slow: once 3 wait above it they are acknowledged alone.
        assert_eq!(c.flush(3), vec![(2, false), (3, false), (4, false)]);
        c.finished(1);
        c.finished(5);
        // 1 completes the run; 2..4 are already acknowledged and 5 joins the multiple ack.
        assert_eq!(c.flush(3), vec![(5, true)]);
        assert_eq!(c.run_end, 5);
        c.finished(7);
        c.finished(6);
        assert_eq!(c.flush(3), vec![(7, true)]);
    }

    #[test]
    fn tags_in_order_need_no_bookkeeping() {
        let mut c = Coalescer::default();
        for t in 1..=50 {
            c.finished(t);
        }
        assert!(c.waiting.is_empty() && c.acked_alone.is_empty());
        assert_eq!(c.flush(25), vec![(50, true)]);
        c.finished(51);
        c.settled_alone(52);
        assert!(c.waiting.is_empty() && c.acked_alone.is_empty());
        assert_eq!(c.flush(25), vec![(51, true)]);
        assert_eq!(c.flush(25), vec![]);
    }

    /// Random finishing orders, nacks and flushes, checked against what the broker
    /// allows: an ack names an outstanding tag, a multiple ack covers only finished
    /// ones, and in the end every finished tag is acknowledged and no nacked one is.
    #[test]
    fn every_order_acks_exactly_the_finished_tags() {
        for seed in 0..500 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let n = rng.u64(1..120);
            let mut order: Vec<u64> = (1..=n).collect();
            // Mostly in order, with some deliveries overtaken by later ones.
            for i in 0..order.len() {
                if rng.u8(..4) == 0 {
                    let j = rng.usize(i..order.len());
                    order.swap(i, j);
                }
            }
            let nacked: BTreeSet<u64> = order
                .iter()
                .copied()
                .filter(|_| rng.u8(..10) == 0)
                .collect();
            let spill = rng.usize(1..20);
            let mut c = Coalescer::default();
            let mut outstanding: BTreeSet<u64> = (1..=n).collect();
            let mut finished = BTreeSet::new();
            let mut acked = BTreeSet::new();
            // Sends a flush's acks to a model of the broker's outstanding deliveries.
            fn apply(
                c: &mut Coalescer,
                spill: usize,
                finished: &BTreeSet<u64>,
                outstanding: &mut BTreeSet<u64>,
                acked: &mut BTreeSet<u64>,
            ) {
                for (tag, multiple) in c.flush(spill) {
                    assert!(outstanding.contains(&tag), "ack names settled tag {tag}");
                    let covered: Vec<u64> = if multiple {
                        outstanding.range(..=tag).copied().collect()
                    } else {
                        vec![tag]
                    };
                    for t in covered {
                        assert!(finished.contains(&t), "ack covers unfinished {t}");
                        outstanding.remove(&t);
                        acked.insert(t);
                    }
                }
            }
            for &tag in &order {
                if nacked.contains(&tag) {
                    outstanding.remove(&tag);
                    c.settled_alone(tag);
                } else {
                    finished.insert(tag);
                    c.finished(tag);
                }
                if rng.u8(..5) == 0 {
                    apply(&mut c, spill, &finished, &mut outstanding, &mut acked);
                }
            }
            apply(&mut c, spill, &finished, &mut outstanding, &mut acked);
            assert!(
                outstanding.is_empty(),
                "seed {seed}: never acknowledged: {outstanding:?}"
            );
            assert_eq!(acked, finished, "seed {seed}");
        }
    }

    #[test]
    fn a_nacked_tag_is_never_named_by_an_ack() {
        let mut c = Coalescer::default();
        c.finished(1);
        c.settled_alone(2);
        assert_eq!(c.flush(100), vec![(1, true)]);
        c.settled_alone(3);
        assert_eq!(c.flush(100), vec![]);
        c.finished(4);
        assert_eq!(c.flush(100), vec![(4, true)]);
    }

    #[test]
    fn only_already_acked_tags_need_no_ack() {
        let mut c = Coalescer::default();
        c.finished(2);
        assert_eq!(c.flush(1), vec![(2, false)]);
        c.finished(1);
        assert_eq!(c.flush(1), vec![(1, true)]);
        assert_eq!(c.run_end, 2);
    }
}
