//! Which publish a returned (unroutable) message belongs to.
//!
//! A broker's `basic.return` names no delivery tag, and lapin hands it to the next confirm
//! it resolves: with a multiple ack, that is often another publish of the channel (the
//! lowest one the ack covers). Taken at its word, a routed publish was told it was
//! unroutable (a dead letter or retry then sent again: a duplicate) and the unroutable one
//! that it went through (a mandatory publish silently lost).
//!
//! So each publish of a channel takes a [`Ticket`] in send order, with a fingerprint of
//! its message (exchange, routing key, body). Whichever publish's confirm carries a return
//! finds its owner by fingerprint, and a publish decides whether it was returned only once
//! every publish sent before it on the channel has looked at its own confirm: the broker
//! sends a return before the confirm of its message, so its carrier is among those.

use lapin::message::BasicReturnMessage;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The longest a publish waits for those sent before it to look at their confirms.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The publishes of one channel, from send to decision.
#[derive(Debug, Default)]
pub(crate) struct Returns(Mutex<Book>);

#[derive(Debug, Default)]
struct Book {
    next: u64,
    /// Publishes whose confirm has not been looked at yet.
    unconfirmed: BTreeSet<u64>,
    /// Undecided publishes by fingerprint: candidates for a return.
    by_print: HashMap<u64, BTreeSet<u64>>,
    /// The returns found for undecided publishes: the broker's reply text.
    returned: HashMap<u64, String>,
    /// Publishes waiting for those sent before them.
    waiting: BTreeMap<u64, Waker>,
}

/// One publish's place on its channel; given up when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    returns: Arc<Returns>,
    seq: u64,
    print: u64,
}

/// The fingerprint of a message: its exchange, routing key and body.
pub(crate) fn fingerprint(exchange: &str, routing_key: &str, body: &[u8]) -> u64 {
    let mut h = foldhash::fast::FixedState::with_seed(0x5eed).build_hasher();
    exchange.hash(&mut h);
    routing_key.hash(&mut h);
    body.hash(&mut h);
    h.finish()
}

impl Returns {
    /// Takes the next place, for a message of fingerprint `print` about to be sent.
    pub(crate) fn ticket(self: &Arc<Self>, print: u64) -> Ticket {
        let mut book = self.0.lock();
        let seq = book.next;
        book.next += 1;
        book.unconfirmed.insert(seq);
        book.by_print.entry(print).or_default().insert(seq);
        Ticket {
            returns: self.clone(),
            seq,
            print,
        }
    }
}

/// What a publish's confirm says of it, its return found by fingerprint.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Confirmed and routed.
    Taken,
    /// Nacked.
    Nacked,
    /// Returned unroutable: the broker's reply text.
    Returned(String),
}

impl Ticket {
    /// [`Ticket::confirmed`] with `confirmation`, then [`Ticket::returned`]: the verdict.
    pub(crate) async fn verdict(&self, confirmation: lapin::Confirmation) -> Verdict {
        let (acked, carried) = match confirmation {
            lapin::Confirmation::Ack(carried) => (true, carried),
            lapin::Confirmation::Nack(carried) => (false, carried),
            lapin::Confirmation::NotRequested => (true, None),
        };
        self.confirmed(carried);
        let returned = self.returned().await;
        match (acked, returned) {
            (false, _) => Verdict::Nacked,
            (true, Some(text)) => Verdict::Returned(text),
            (true, None) => Verdict::Taken,
        }
    }

    /// Its confirm came, carrying `returned` (whoever's it is): the return goes to its
    /// owner, and the publishes waiting for this one may decide.
    pub(crate) fn confirmed(&self, returned: Option<BasicReturnMessage>) {
        let mut book = self.returns.0.lock();
        if let Some(message) = returned {
            let d = &message.delivery;
            let print = fingerprint(d.exchange.as_str(), d.routing_key.as_str(), &d.data);
            let owner = book.by_print.get(&print).and_then(|seqs| {
                seqs.iter()
                    .copied()
                    .find(|seq| !book.returned.contains_key(seq))
            });
            match owner {
                Some(owner) => {
                    let text = message.reply_text.to_string();
                    book.returned.insert(owner, text);
                }
                None => tracing::debug!(
                    exchange = d.exchange.as_str(),
                    routing_key = d.routing_key.as_str(),
                    "a returned message whose publish is gone"
                ),
            }
        }
        book.confirmed(self.seq);
    }

    /// Whether its message was returned (the broker's reply text if so), once every
    /// publish sent before it on the channel has looked at its confirm, or after
    /// [`MAX_WAIT`] (a publish whose caller stopped polling it holds no one back longer).
    pub(crate) async fn returned(&self) -> Option<String> {
        let mut decided = std::pin::pin!(self.decided());
        if let Poll::Ready(returned) = futures_util::poll!(decided.as_mut()) {
            return returned;
        }
        match tokio::time::timeout(MAX_WAIT, decided).await {
            Ok(returned) => returned,
            Err(_) => {
                let mut book = self.returns.0.lock();
                book.waiting.remove(&self.seq);
                book.returned.remove(&self.seq)
            }
        }
    }

    async fn decided(&self) -> Option<String> {
        std::future::poll_fn(|cx| {
            let mut book = self.returns.0.lock();
            if book
                .unconfirmed
                .first()
                .is_some_and(|&first| first < self.seq)
            {
                book.waiting.insert(self.seq, cx.waker().clone());
                return Poll::Pending;
            }
            book.waiting.remove(&self.seq);
            Poll::Ready(book.returned.remove(&self.seq))
        })
        .await
    }
}

impl Book {
    /// `seq`'s confirm was looked at (or never will be): wakes those it held back.
    fn confirmed(&mut self, seq: u64) {
        if !self.unconfirmed.remove(&seq) {
            return;
        }
        let below = self.unconfirmed.first().copied().unwrap_or(u64::MAX);
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() > below {
                break;
            }
            entry.remove().wake();
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut book = self.returns.0.lock();
        book.confirmed(self.seq);
        book.waiting.remove(&self.seq);
        book.returned.remove(&self.seq);
        if let Some(seqs) = book.by_print.get_mut(&self.print) {
            seqs.remove(&self.seq);
            if seqs.is_empty() {
                book.by_print.remove(&self.print);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn a_publish_decides_once_those_before_it_looked_at_their_confirms() {
        let returns = Arc::new(Returns::default());
        let first = returns.ticket(1);
        let second = returns.ticket(2);
        second.confirmed(None);
        // The first's confirm may carry the second's return: the second waits.
        assert_eq!(second.returned().now_or_never(), None);
        first.confirmed(None);
        assert_eq!(second.returned().now_or_never(), Some(None));
        drop(first);
        // A ticket given up holds no one back.
        let third = returns.ticket(3);
        let fourth = returns.ticket(4);
        drop(third);
        fourth.confirmed(None);
        assert_eq!(fourth.returned().now_or_never(), Some(None));
    }
}
