//! Acknowledgements of one consumer channel, coalesced: handlers finish in any order and
//! report here; contiguous runs of finished deliveries are acknowledged with one
//! `basic.ack(multiple)`, so acks are never awaited one by one on the delivery path.
//!
//! A delivery whose handler is slow does not hold back the others for long: once half
//! the prefetch window has finished above it, those are acknowledged one by one.

use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use std::collections::BTreeSet;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Done with: acknowledge.
    Ack,
    /// Not settled: give it back to the broker for redelivery.
    Requeue,
}

/// Where delivery tasks report how their delivery is settled.
#[derive(Debug, Clone)]
pub(crate) struct Acks(mpsc::UnboundedSender<(u64, Settle)>);

impl Acks {
    pub(crate) fn settle(&self, tag: u64, how: Settle) {
        // A closed coalescer means the channel is gone; the broker redelivers.
        let _ = self.0.send((tag, how));
    }
}

/// Starts the coalescer of `channel`; it ends once every [`Acks`] clone is dropped and
/// all it was told has been sent.
pub(crate) fn spawn(channel: Channel, queue: String, prefetch: u16) -> (Acks, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(run(channel, queue, usize::from(prefetch / 2).max(1), rx));
    (Acks(tx), task)
}

async fn run(
    ch: Channel,
    queue: String,
    spill: usize,
    mut rx: mpsc::UnboundedReceiver<(u64, Settle)>,
) {
    let mut state = Coalescer::default();
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let the handlers that are ready finish first, so one ack covers them all.
        tokio::task::yield_now().await;
        batch.push(first);
        while let Ok(next) = rx.try_recv() {
            batch.push(next);
        }
        for (tag, how) in batch.drain(..) {
            if how == Settle::Requeue {
                let opts = BasicNackOptions {
                    multiple: false,
                    requeue: true,
                };
                if let Err(e) = ch.basic_nack(tag, opts).await {
                    tracing::warn!(queue = %queue, error = %e, "nack failed; the broker will redeliver");
                }
                state.settled_alone(tag);
            } else {
                state.finished(tag);
            }
        }
        for (tag, multiple) in state.flush(spill) {
            if let Err(e) = ch.basic_ack(tag, BasicAckOptions { multiple }).await {
                tracing::warn!(queue = %queue, error = %e, "ack failed; the broker will redeliver");
            }
        }
    }
}

/// Which delivery tags to acknowledge, given the order handlers finish in.
#[derive(Debug, Default)]
struct Coalescer {
    /// Every tag up to this one is settled.
    settled_upto: u64,
    /// Finished above a gap, not acknowledged yet.
    waiting: BTreeSet<u64>,
    /// Finished above a gap and already acknowledged one by one.
    acked_alone: BTreeSet<u64>,
}

impl Coalescer {
    fn finished(&mut self, tag: u64) {
        if tag > self.settled_upto {
            self.waiting.insert(tag);
        }
    }

    /// `tag` was settled by other means (a nack): it needs no ack, and no multiple ack
    /// may name it.
    fn settled_alone(&mut self, tag: u64) {
        if tag > self.settled_upto {
            self.acked_alone.insert(tag);
        }
    }

    /// The acks to send: `(tag, multiple)`.
    fn flush(&mut self, spill: usize) -> Vec<(u64, bool)> {
        // The highest tag of the run that still needs acknowledging: a multiple ack on it
        // covers the run without naming a tag that was already acknowledged alone.
        let mut highest_unacked = None;
        loop {
            let next = self.settled_upto + 1;
            if self.waiting.remove(&next) {
                highest_unacked = Some(next);
            } else if !self.acked_alone.remove(&next) {
                break;
            }
            self.settled_upto = next;
        }
        let mut out = Vec::new();
        if let Some(tag) = highest_unacked {
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
        assert_eq!(c.settled_upto, 5);
        c.finished(7);
        c.finished(6);
        assert_eq!(c.flush(3), vec![(7, true)]);
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
        assert_eq!(c.settled_upto, 2);
    }
}
