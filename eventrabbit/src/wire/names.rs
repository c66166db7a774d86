//! The names eventrabbit derives for the queues it declares beside a consumed queue.

use std::time::Duration;

/// The name of the retry wait queue for `delay` in front of `queue`.
pub(crate) fn retry_queue_name(queue: &str, delay: Duration) -> String {
    format!("{queue}.retry.{}ms", delay.as_millis())
}
