//! [`Consumer`]: a consumer started with [`Handle::start`](crate::Handle::start), known to
//! be consuming.

use crate::error::{Error, Result};
use tokio::task::JoinHandle;

/// A running consumer, returned by [`Handle::start`](crate::Handle::start) once its
/// queue, bindings and dead-letter queue exist and the broker delivers to it. It runs
/// until [`Handle::shutdown`](crate::Handle::shutdown) (or an error reconnecting cannot
/// fix); [`Consumer::join`] waits for that. Dropping it does not stop the consumer.
#[derive(Debug)]
pub struct Consumer {
    queue: String,
    task: JoinHandle<Result<()>>,
}

impl Consumer {
    pub(crate) fn new(queue: String, task: JoinHandle<Result<()>>) -> Self {
        Self { queue, task }
    }

    /// The queue it consumes.
    #[must_use]
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Whether it has ended (after a shutdown, or on an error).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until it ends: `Ok` after [`Handle::shutdown`](crate::Handle::shutdown), or
    /// the error that ended it.
    pub async fn join(self) -> Result<()> {
        ended(&self.queue, self.task.await)
    }
}

/// The outcome of a consumer's task: its own, or why it ended without one.
pub(crate) fn ended(
    queue: &str,
    joined: std::result::Result<Result<()>, tokio::task::JoinError>,
) -> Result<()> {
    joined.unwrap_or_else(|e| {
        Err(Error::Ended {
            queue: queue.to_owned(),
            reason: if e.is_panic() {
                "its task panicked".to_owned()
            } else {
                "its task was cancelled".to_owned()
            },
        })
    })
}
