//! Retries on a log happen in place: the stream consumer waits out the delay and runs the
//! handler again, since nothing can be put back into a log. [`InPlace`] lends the
//! pipeline a transport that records a retry instead of sending it, and sends everything
//! else (results, replies, dead letters) through the broker's transport.

use crate::config::Resolved;
use crate::error::Result;
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::transport::{Outgoing, Transport};
use parking_lot::Mutex;
use std::time::Duration;

/// A retry the pipeline asked for.
#[derive(Debug, Clone)]
pub(crate) struct RetryInPlace {
    pub(crate) retry: u32,
    pub(crate) delay: Duration,
    pub(crate) error: String,
}

/// The broker's transport, with retries recorded for the stream consumer to carry out.
#[derive(Debug)]
pub(crate) struct InPlace<'a, T> {
    inner: &'a T,
    retry: Mutex<Option<RetryInPlace>>,
}

impl<'a, T: Transport> InPlace<'a, T> {
    pub(crate) fn new(inner: &'a T) -> Self {
        Self {
            inner,
            retry: Mutex::new(None),
        }
    }

    /// The retry asked for while handling the last message, if any.
    pub(crate) fn take_retry(&self) -> Option<RetryInPlace> {
        self.retry.lock().take()
    }
}

impl<T: Transport> Transport for InPlace<'_, T> {
    fn publish(&self, msg: Outgoing<'_>) -> impl Future<Output = Result<()>> + Send {
        self.inner.publish(msg)
    }

    fn frame_max(&self) -> usize {
        self.inner.frame_max()
    }

    fn mandatory(&self) -> bool {
        self.inner.mandatory()
    }

    async fn schedule_retry(
        &self,
        _message: &Message,
        retry: u32,
        delay: Duration,
        _queue: &Resolved,
        error: &str,
    ) -> Result<()> {
        *self.retry.lock() = Some(RetryInPlace {
            retry,
            delay,
            error: error.to_owned(),
        });
        Ok(())
    }

    fn dead_letter(
        &self,
        message: &Message,
        reason: &DeadReason,
        queue: &Resolved,
    ) -> impl Future<Output = Result<()>> + Send {
        self.inner.dead_letter(message, reason, queue)
    }
}

impl RetryInPlace {
    /// The message to run again: `message` with the headers of this retry.
    pub(crate) fn next_try(&self, message: &Message) -> Message {
        let mut next = message.clone();
        next.properties =
            crate::pipeline::failure::retry_properties(message, self.retry, &self.error);
        next
    }
}
