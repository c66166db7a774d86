//! The broker as a [`Transport`]: publishing with confirms, retries through wait queues,
//! dead letters to the dead-letter queue.

use super::publisher::Publisher;
use super::retry;
use crate::error::Result;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::failure::dead_letter_properties;
use crate::pipeline::transport::{Outgoing, Transport};
use std::time::Duration;

impl Transport for Publisher {
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send {
        Publisher::publish(self, msg)
    }

    async fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        durable: bool,
        error: &str,
    ) -> Result<()> {
        retry::schedule_retry(self, message, retry, delay, durable, error).await
    }

    async fn dead_letter(
        &self,
        message: &Message,
        dead_letter_queue: &str,
        reason: &DeadReason,
    ) -> Result<()> {
        self.publish(Outgoing {
            exchange: "",
            routing_key: dead_letter_queue,
            body: &message.body,
            properties: dead_letter_properties(message, reason),
            mandatory: true,
        })
        .await
    }
}
