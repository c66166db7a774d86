//! What carries messages, as the per-message pipeline sees it: the AMQP transport and the
//! in-memory test broker both implement [`Transport`].

use super::dead_reason::DeadReason;
use crate::config::Resolved;
use crate::error::Result;
use crate::handler::context::Message;
use crate::wire::properties::Properties;
use std::future::Future;
use std::time::Duration;

/// A message ready to go.
#[derive(Debug)]
pub(crate) struct Outgoing<'a> {
    pub(crate) exchange: &'a str,
    pub(crate) routing_key: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) properties: Properties,
    /// Whether no queue receiving it is an error ([`Error::Unroutable`]); otherwise it is
    /// counted and logged.
    ///
    /// [`Error::Unroutable`]: crate::error::Error::Unroutable
    pub(crate) mandatory: bool,
}

/// What carries messages: publishing, scheduling a retry, dead-lettering.
///
/// An error that is [transient](crate::error::Error::is_transient) gives the message back
/// to its queue; any other error from `schedule_retry` dead-letters the message instead,
/// and one from `dead_letter` leaves it unsettled (the consumer holds it and says why).
pub(crate) trait Transport: Send + Sync {
    /// Publishes and returns once the message is safely accepted.
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send;

    /// The largest frame a message's properties and headers must fit in.
    fn frame_max(&self) -> usize;

    /// Whether what handlers publish is mandatory by default (`Config::mandatory`).
    fn mandatory(&self) -> bool;

    /// Makes `message` come back to its queue (set up as `queue` says) after `delay`,
    /// counted as retry `retry`.
    fn schedule_retry(
        &self,
        message: &Message,
        retry: u32,
        delay: Duration,
        queue: &Resolved,
        error: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Moves `message` to its queue's dead-letter queue, saying why.
    fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
    ) -> impl Future<Output = Result<()>> + Send;
}
