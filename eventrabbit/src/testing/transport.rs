//! The test broker as a [`Transport`]: publishing routes into its queues, retries go
//! straight back to the failing queue, dead letters are kept for inspection.

use super::records::DeadLetter;
use super::state::{Inner, route};
use crate::config::Resolved;
use crate::error::Result;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::failure::{dead_letter_properties, retry_properties};
use crate::pipeline::transport::{Outgoing, Transport};
use crate::wire::limits::{self, DEFAULT_FRAME_MAX};
use std::sync::Arc;
use std::time::Duration;

/// The broker as a [`Transport`] for `delivery::handle`.
pub(super) struct TestTransport<'a>(pub(super) &'a Arc<Inner>);

impl Transport for TestTransport<'_> {
    fn frame_max(&self) -> usize {
        DEFAULT_FRAME_MAX
    }

    fn mandatory(&self) -> bool {
        self.0.config.mandatory
    }

    async fn publish(&self, msg: Outgoing<'_>) -> Result<()> {
        // Like RabbitMQ: publishing to a missing exchange fails; a message no queue takes does not.
        route(
            self.0,
            msg.exchange,
            msg.routing_key,
            msg.body,
            msg.properties.into_built(),
            msg.mandatory,
        )
    }

    async fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        _queue: &Resolved,
        error: &str,
    ) -> Result<()> {
        let properties = retry_properties(message, retry, error);
        limits::check_properties(&properties, DEFAULT_FRAME_MAX)?;
        let mut state = self.0.state();
        state.retry_delays.push((message.queue.to_string(), delay));
        if let Some(q) = state.queues.get_mut(&*message.queue) {
            q.messages.push_back(Arc::new(Message {
                queue: message.queue.clone(),
                exchange: "".into(),
                routing_key: message.queue.as_ref().into(),
                redelivered: false,
                offset: None,
                properties,
                body: message.body.clone(),
            }));
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
    ) -> Result<()> {
        let dead_letter_queue = queue.dead_letter_queue.as_str();
        let properties = dead_letter_properties(message, reason, DEFAULT_FRAME_MAX);
        let letter = DeadLetter {
            code: reason.code().to_owned(),
            reason: reason.to_string(),
            attempts: reason.attempts(),
            body: message.body.clone(),
        };
        let kept = Message {
            queue: message.queue.clone(),
            exchange: message.exchange.clone(),
            routing_key: message.routing_key.clone(),
            redelivered: false,
            offset: None,
            properties,
            body: message.body.clone(),
        };
        let mut state = self.0.state();
        state
            .dead_letters
            .entry(dead_letter_queue.to_owned())
            .or_default()
            .push((kept, letter));
        Ok(())
    }
}
