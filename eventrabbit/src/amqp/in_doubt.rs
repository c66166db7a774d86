//! Publishes left in doubt: the broker's confirm had not come when the publish's deadline
//! passed, so the message may or may not be in its queue. Sending it again at once would
//! put it there twice if the broker did take it (a retry then runs twice; a dead letter is
//! in the dead-letter queue twice, issue 33). So the confirm is still awaited, in a task of
//! its own, and whoever must decide whether to send the message again asks it first.

use super::returns::{Ticket, Verdict};
use lapin::PublisherConfirm;
use parking_lot::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a confirm is awaited after its publish gave up on it. A channel that closes
/// answers every confirm it owes (as not taken) at once; this bounds a channel that stays
/// open and silent.
const WAIT_AT_MOST: Duration = Duration::from_secs(300);

/// What the broker answered for a publish in doubt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No answer yet.
    Pending,
    /// Confirmed and routed: the message is in its queue.
    Taken,
    /// Nacked, returned as unroutable, its channel lost, or no answer within
    /// [`WAIT_AT_MOST`]: it must be sent again (at worst it is then there twice).
    NotTaken,
}

/// A publish whose confirm was still awaited when its deadline passed.
#[derive(Debug, Clone)]
pub(crate) struct InDoubt(watch::Receiver<Outcome>);

impl InDoubt {
    /// Goes on awaiting `confirm` (of the publish holding `ticket`) on `runtime`; a
    /// mandatory publish returned as unroutable was not taken.
    pub(crate) fn watch(
        runtime: &tokio::runtime::Handle,
        confirm: PublisherConfirm,
        ticket: Ticket,
    ) -> Self {
        let (tx, rx) = watch::channel(Outcome::Pending);
        runtime.spawn(async move {
            let outcome = match tokio::time::timeout(WAIT_AT_MOST, confirm).await {
                Ok(Ok(confirmation)) => match ticket.verdict(confirmation).await {
                    Verdict::Taken => Outcome::Taken,
                    Verdict::Nacked | Verdict::Returned(_) => Outcome::NotTaken,
                },
                _ => Outcome::NotTaken,
            };
            let _ = tx.send(outcome);
        });
        Self(rx)
    }

    /// A publish known to be taken (confirmed before its deadline).
    pub(crate) fn taken() -> Self {
        Self(watch::channel(Outcome::Taken).1)
    }

    /// The broker's answer, waiting for it until `deadline` at most.
    pub(crate) async fn outcome(&self, deadline: Instant) -> Outcome {
        let mut rx = self.0.clone();
        let answered = rx.wait_for(|outcome| *outcome != Outcome::Pending);
        match tokio::time::timeout_at(deadline, answered).await {
            Ok(Ok(outcome)) => *outcome,
            Ok(Err(_)) => Outcome::NotTaken,
            Err(_) => Outcome::Pending,
        }
    }
}

/// Where a publish puts its confirm when it gives up on it: the one delivery's retry or
/// dead letter being sent.
#[derive(Debug, Default)]
pub(crate) struct DoubtSlot(Mutex<Option<InDoubt>>);

impl DoubtSlot {
    pub(crate) fn put(&self, doubt: InDoubt) {
        *self.0.lock() = Some(doubt);
    }

    pub(crate) fn take(&self) -> Option<InDoubt> {
        self.0.lock().take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unanswered_doubt_stays_pending_until_the_deadline() {
        let (tx, rx) = watch::channel(Outcome::Pending);
        let doubt = InDoubt(rx);
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(doubt.outcome(soon).await, Outcome::Pending);
        tx.send(Outcome::Taken).unwrap();
        assert_eq!(doubt.outcome(Instant::now()).await, Outcome::Taken);
        // The watcher gone without an answer: not taken, send again.
        let (tx, rx) = watch::channel(Outcome::Pending);
        drop(tx);
        assert_eq!(InDoubt(rx).outcome(soon).await, Outcome::NotTaken);
        assert_eq!(InDoubt::taken().outcome(soon).await, Outcome::Taken);
    }
}
