//! The broker as a [`Transport`]: publishing with confirms, retries through wait queues,
//! dead letters to the dead-letter queue.

use super::client::Client;
use super::retry::{Target, send_to_queue, wait_queue};
use crate::error::Result;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::failure::{dead_letter_properties, retry_properties};
use crate::pipeline::transport::{Outgoing, Transport};
use lapin::types::FieldTable;
use std::time::Duration;

impl Transport for Client {
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send {
        self.publisher.publish(msg)
    }

    fn frame_max(&self) -> usize {
        self.connector.frame_max()
    }

    fn mandatory(&self) -> bool {
        self.config.mandatory
    }

    async fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        durable: bool,
        error: &str,
    ) -> Result<()> {
        let (queue, arguments) = wait_queue(&message.queue, delay);
        let target = Target {
            queue: &queue,
            durable,
            arguments,
            what: "retry queue",
        };
        let properties = retry_properties(message, retry, error);
        send_to_queue(
            &self.connector,
            &self.publisher,
            &self.declared,
            target,
            &message.body,
            properties,
        )
        .await
    }

    async fn dead_letter(
        &self,
        message: &Message,
        dead_letter_queue: &str,
        reason: &DeadReason,
        durable: bool,
    ) -> Result<()> {
        let target = Target {
            queue: dead_letter_queue,
            durable,
            arguments: FieldTable::default(),
            what: "dead-letter queue",
        };
        let properties = dead_letter_properties(message, reason, self.frame_max());
        send_to_queue(
            &self.connector,
            &self.publisher,
            &self.declared,
            target,
            &message.body,
            properties,
        )
        .await
    }
}
