//! The broker as a [`Transport`]: publishing with confirms, retries through wait queues,
//! dead letters to the dead-letter queue.

use super::client::Client;
use super::in_doubt::DoubtSlot;
use super::retry::{Target, dead_letter_queue_arguments, send_to_queue, wait_queue};
use crate::config::Resolved;
use crate::error::Result;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::failure::{dead_letter_properties, retry_properties};
use crate::pipeline::transport::{Outgoing, Transport};
use std::time::Duration;
use tokio::time::Instant;

impl Client {
    /// How long a consumer sends what settles a delivery through weather.
    pub(super) fn settle_deadline(&self) -> Instant {
        Instant::now() + self.config.settle_timeout
    }
}

/// What the consumers send to settle a delivery (a result, a reply, a retry, a dead
/// letter, a failure event) goes through weather until `Config::settle_timeout`, then the
/// delivery is given back: a finished delivery is never kept unacknowledged for long.
impl Transport for Client {
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send {
        self.publisher
            .publish_until(msg, Some(self.settle_deadline()))
    }

    fn frame_max(&self) -> usize {
        self.connector.frame_max()
    }

    fn mandatory(&self) -> bool {
        self.config.mandatory
    }

    fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        queue: &Resolved,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send {
        self.send_retry(message, retry, delay, queue, error, None)
    }

    fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
    ) -> impl Future<Output = Result<()>> + Send {
        self.send_dead_letter(message, reason, queue, None)
    }
}

impl Client {
    /// Sends `message` to its wait queue as retry number `retry`; a publish left in doubt
    /// goes to `doubt`.
    pub(super) async fn send_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        queue: &Resolved,
        error: &str,
        doubt: Option<&DoubtSlot>,
    ) -> Result<()> {
        let (wait, arguments) = wait_queue(&message.queue, delay, queue.queue_type);
        let target = Target {
            queue: &wait,
            durable: queue.durable,
            arguments,
            what: "retry queue",
        };
        let properties = retry_properties(message, retry, error);
        send_to_queue(
            self.sender(doubt),
            target,
            &message.body,
            properties,
            self.settle_deadline(),
        )
        .await
    }

    /// Sends `message` to its dead-letter queue for `reason`; a publish left in doubt goes
    /// to `doubt`.
    pub(super) async fn send_dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
        doubt: Option<&DoubtSlot>,
    ) -> Result<()> {
        let target = Target {
            queue: &queue.dead_letter_queue,
            durable: queue.durable,
            arguments: dead_letter_queue_arguments(queue.queue_type),
            what: "dead-letter queue",
        };
        let properties = dead_letter_properties(message, reason, self.frame_max());
        send_to_queue(
            self.sender(doubt),
            target,
            &message.body,
            properties,
            self.settle_deadline(),
        )
        .await
    }
}
