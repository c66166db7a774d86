//! What carries messages, as the per-message pipeline sees it: the AMQP transport and the
//! in-memory test broker both implement [`Transport`].

use super::dead_reason::DeadReason;
use crate::error::Result;
use crate::handler::context::Message;
use lapin::BasicProperties;
use std::future::Future;
use std::time::Duration;

/// A message ready to go.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) properties: BasicProperties,
    pub(crate) mandatory: bool,
}

/// What carries messages: publishing, scheduling a retry, dead-lettering.
pub(crate) trait Transport: Send + Sync {
    /// Publishes and returns once the message is safely accepted.
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send;

    /// Makes `message` come back to its queue after `delay`, counted as retry `retry`.
    fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        durable: bool,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Moves `message` to `dead_letter_queue`, saying why.
    fn dead_letter(
        &self,
        message: &Message,
        dead_letter_queue: &str,
        reason: &DeadReason,
    ) -> impl Future<Output = Result<()>> + Send;
}
