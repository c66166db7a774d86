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

use crate::telemetry::metric;
use lapin::message::BasicReturnMessage;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// The longest a publish waits for those sent before it to look at their confirms.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The publishes of one channel, from send to decision.
#[derive(Debug, Default)]
pub(crate) struct Returns(Mutex<Book>);

/// The publishes from the first whose confirm has not been looked at to the last sent,
/// in send order (a ring: nothing is allocated per publish).
#[derive(Debug, Default)]
struct Book {
    /// The sequence number of `slots[0]`: the first publish whose confirm has not been
    /// looked at (all before it have been).
    base: u64,
    slots: VecDeque<Slot>,
    /// Returns found for publishes that left the ring before deciding (rare: only with
    /// a return).
    left: HashMap<u64, String>,
}

#[derive(Debug)]
struct Slot {
    /// The fingerprint of a message that can be returned (sent mandatory); `None` for
    /// one that cannot.
    print: Option<u64>,
    /// Whether its sender does not wait to learn if it was returned (a publish that is
    /// not mandatory): a return found for it is counted and logged when it is handed over.
    reported_here: bool,
    confirmed: bool,
    returned: Option<String>,
    waker: Option<Waker>,
}

/// One publish's place on its channel; given up when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    returns: Arc<Returns>,
    seq: u64,
    /// Whether its sender waits to learn if its message was returned: a mandatory
    /// publish (sent mandatory on the wire, and an error if returned).
    decides: bool,
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
    #[cfg(test)]
    fn ticket(self: &Arc<Self>, print: u64) -> Ticket {
        let mut book = self.0.lock();
        self.ticket_in(&mut book, Some(print), true)
    }

    fn ticket_in(self: &Arc<Self>, book: &mut Book, print: Option<u64>, decides: bool) -> Ticket {
        let seq = book.base + book.slots.len() as u64;
        let decides = decides && print.is_some();
        book.slots.push_back(Slot {
            print,
            reported_here: print.is_some() && !decides,
            confirmed: false,
            returned: None,
            waker: None,
        });
        Ticket {
            returns: self.clone(),
            seq,
            decides,
        }
    }

    /// Sends a publish (`send`: lapin's `basic_publish`) with a ticket for a message of
    /// fingerprint `print` (`None`: it cannot be returned). With `decides`, its verdict
    /// says whether it was returned, once the publishes before it looked at their
    /// confirms; without, its verdict comes with its own confirm, and a return found for
    /// it is counted and logged by the book. Its first poll, where lapin numbers the
    /// publish and queues its frames, runs under the book's lock: tickets are in the order
    /// of the broker's delivery tags even when several threads publish on the channel at
    /// once.
    pub(crate) async fn send<F: Future>(
        self: &Arc<Self>,
        print: Option<u64>,
        decides: bool,
        send: F,
    ) -> (Ticket, F::Output) {
        let mut send = std::pin::pin!(send);
        let mut ticket = None;
        let sent = std::future::poll_fn(|cx| {
            if ticket.is_some() {
                return send.as_mut().poll(cx);
            }
            let mut book = self.0.lock();
            ticket = Some(self.ticket_in(&mut book, print, decides));
            let polled = send.as_mut().poll(cx);
            drop(book);
            polled
        })
        .await;
        (ticket.expect("taken on the first poll"), sent)
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
        if !acked {
            return Verdict::Nacked;
        }
        if !self.decides {
            return Verdict::Taken;
        }
        match self.returned().await {
            Some(text) => Verdict::Returned(text),
            None => Verdict::Taken,
        }
    }

    /// Its confirm came, carrying `returned` (whoever's it is): the return goes to its
    /// owner, and the publishes waiting for this one may decide.
    pub(crate) fn confirmed(&self, returned: Option<BasicReturnMessage>) {
        let mut book = self.returns.0.lock();
        let unheeded = returned.and_then(|message| book.hand_over(message));
        book.confirmed(self.seq);
        drop(book);
        // Counted and logged out of the book's lock, which every publish of the channel takes.
        if let Some(message) = unheeded {
            let d = &message.delivery;
            metric::unroutable(d.exchange.as_str());
            tracing::warn!(
                exchange = d.exchange.as_str(),
                routing_key = d.routing_key.as_str(),
                "no queue received the message ({})",
                message.reply_text
            );
        }
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
            Err(_) => self.returns.0.lock().take_returned(self.seq),
        }
    }

    fn decided(&self) -> impl Future<Output = Option<String>> + '_ {
        std::future::poll_fn(|cx| {
            let mut book = self.returns.0.lock();
            if book.base < self.seq
                && let Some(slot) = book.slot(self.seq)
            {
                slot.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(book.take_returned(self.seq))
        })
    }
}

impl Book {
    fn slot(&mut self, seq: u64) -> Option<&mut Slot> {
        let i = usize::try_from(seq.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(i)
    }

    /// Gives a return to the first publish of its fingerprint still in the ring without
    /// one (its owner: the broker returns a message before confirming it, so the owner
    /// has not left the ring). Gives it back if its owner does not wait for it (to be
    /// counted and logged once the book is let go).
    fn hand_over(&mut self, message: BasicReturnMessage) -> Option<BasicReturnMessage> {
        let d = &message.delivery;
        let print = fingerprint(d.exchange.as_str(), d.routing_key.as_str(), &d.data);
        match self
            .slots
            .iter_mut()
            .find(|slot| slot.print == Some(print) && slot.returned.is_none())
        {
            Some(slot) if slot.reported_here => {
                // Its sender does not wait for it: marked taken (the next message of the
                // same fingerprint gets the next return); the caller counts and logs it.
                slot.returned = Some(String::new());
                return Some(message);
            }
            Some(slot) => slot.returned = Some(message.reply_text.to_string()),
            None => tracing::debug!(
                exchange = d.exchange.as_str(),
                routing_key = d.routing_key.as_str(),
                "a returned message whose publish is gone"
            ),
        }
        None
    }

    /// `seq`'s confirm was looked at (or never will be): the ring moves past every
    /// confirmed publish at its front, waking those that waited for it.
    fn confirmed(&mut self, seq: u64) {
        match self.slot(seq) {
            Some(slot) if !slot.confirmed => slot.confirmed = true,
            _ => return,
        }
        while self.slots.front().is_some_and(|slot| slot.confirmed) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            if let Some(returned) = slot.returned {
                self.left.insert(self.base, returned);
            }
            if let Some(waker) = slot.waker {
                waker.wake();
            }
            self.base += 1;
        }
    }

    /// The return found for `seq`, taken.
    fn take_returned(&mut self, seq: u64) -> Option<String> {
        if seq < self.base {
            if self.left.is_empty() {
                return None;
            }
            return self.left.remove(&seq);
        }
        self.slot(seq).and_then(|slot| {
            slot.waker = None;
            slot.returned.take()
        })
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut book = self.returns.0.lock();
        if let Some(slot) = book.slot(self.seq) {
            // Gone before deciding: it takes no return and holds no one back.
            slot.print = None;
            slot.returned = None;
            slot.waker = None;
        }
        book.confirmed(self.seq);
        if !book.left.is_empty() {
            book.left.remove(&self.seq);
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

    #[tokio::test]
    async fn a_publish_that_is_not_mandatory_decides_at_its_own_confirm() {
        let returns = Arc::new(Returns::default());
        let first = returns.ticket(1);
        let second = {
            let mut book = returns.0.lock();
            returns.ticket_in(&mut book, Some(1), false)
        };
        // The first has not looked at its confirm: the second does not wait for it.
        let verdict = second
            .verdict(lapin::Confirmation::Ack(None))
            .now_or_never();
        assert!(matches!(verdict, Some(Verdict::Taken)), "{verdict:?}");
        first.confirmed(None);
        assert_eq!(first.returned().now_or_never(), Some(None));
    }
}
