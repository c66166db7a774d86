//! The broker as one delivery's [`Transport`], remembering the dead letter it could not
//! send (the consumer gives the delivery back, and when the message comes again it sends
//! that dead letter instead of running the handler again) and how its retry or dead letter
//! went: taken, or in doubt (its confirm late), so that it is never sent twice.

use super::client::Client;
use super::in_doubt::{DoubtSlot, InDoubt};
use crate::config::Resolved;
use crate::error::Result;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::transport::{Outgoing, Transport};
use parking_lot::Mutex;
use std::time::Duration;

/// [`Client`] as a transport, recording a dead letter that could not be sent.
pub(super) struct Recording<'a> {
    client: &'a Client,
    unsent: Mutex<Option<DeadReason>>,
    /// The delivery's retry or dead letter: taken, or left in doubt.
    sent: DoubtSlot,
}

impl<'a> Recording<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Self {
            client,
            unsent: Mutex::new(None),
            sent: DoubtSlot::default(),
        }
    }

    /// The dead letter decided for the message that could not be sent, if any.
    pub(super) fn unsent_dead_letter(&self) -> Option<DeadReason> {
        self.unsent.lock().take()
    }

    /// The delivery's retry or dead letter, if one was taken by the broker or left in
    /// doubt.
    pub(super) fn sent(&self) -> Option<InDoubt> {
        self.sent.take()
    }

    fn sent_if_ok(&self, result: &Result<()>) {
        if result.is_ok() {
            self.sent.put(InDoubt::taken());
        }
    }
}

impl Transport for Recording<'_> {
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send {
        self.client.publish(msg)
    }

    fn frame_max(&self) -> usize {
        self.client.frame_max()
    }

    fn mandatory(&self) -> bool {
        self.client.mandatory()
    }

    async fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        queue: &Resolved,
        error: &str,
    ) -> Result<()> {
        let sent = self
            .client
            .send_retry(message, retry, delay, queue, error, Some(&self.sent))
            .await;
        self.sent_if_ok(&sent);
        sent
    }

    async fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
    ) -> Result<()> {
        let sent = self
            .client
            .send_dead_letter(message, reason, queue, Some(&self.sent))
            .await;
        self.sent_if_ok(&sent);
        if sent.is_err() {
            *self.unsent.lock() = Some(reason.clone());
        }
        sent
    }
}
