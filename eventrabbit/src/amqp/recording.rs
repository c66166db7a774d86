//! The broker as one delivery's [`Transport`], remembering the dead letter it could not
//! send: the consumer gives the delivery back, and when the message comes again it sends
//! that dead letter instead of running the handler again.

use super::client::Client;
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
}

impl<'a> Recording<'a> {
    pub(super) fn new(client: &'a Client) -> Self {
        Self {
            client,
            unsent: Mutex::new(None),
        }
    }

    /// The dead letter decided for the message that could not be sent, if any.
    pub(super) fn unsent_dead_letter(&self) -> Option<DeadReason> {
        self.unsent.lock().take()
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

    fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        queue: &Resolved,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        self.client
            .schedule_retry(message, retry, delay, queue, error)
    }

    async fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
    ) -> Result<()> {
        let sent = self.client.dead_letter(message, reason, queue).await;
        if sent.is_err() {
            *self.unsent.lock() = Some(reason.clone());
        }
        sent
    }
}
