//! Moving dead letters back to the queue they came from.

use super::publisher::Publisher;
use crate::error::{Error, Result};
use crate::pipeline::failure::without_failure_headers;
use crate::pipeline::transport::Outgoing;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use std::time::Duration;

/// Moves up to `max` messages from `dead_letter_queue` back to `queue`, with their retry
/// count and dead-letter headers cleared. Returns how many were moved.
pub(crate) async fn redrive(
    publisher: &Publisher,
    dead_letter_queue: &str,
    queue: &str,
    max: usize,
) -> Result<usize> {
    let ch = publisher
        .channel(tokio::time::Instant::now() + Duration::from_secs(30))
        .await?;
    let mut moved = 0;
    while moved < max {
        let Some(got) = ch
            .basic_get(dead_letter_queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(Error::amqp(format!(
                "reading dead-letter queue `{dead_letter_queue}`"
            )))?
        else {
            break;
        };
        let delivery = got.delivery;
        let headers =
            without_failure_headers(delivery.properties.headers().clone().unwrap_or_default());
        let props = delivery.properties.clone().with_headers(headers);
        publisher
            .publish(Outgoing {
                exchange: "",
                routing_key: queue,
                body: &delivery.data,
                properties: props,
                mandatory: true,
            })
            .await?;
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(Error::amqp(format!(
                "acknowledging in `{dead_letter_queue}`"
            )))?;
        moved += 1;
    }
    Ok(moved)
}
