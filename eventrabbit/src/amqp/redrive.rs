//! Moving dead letters back to the queue they came from, on a channel of the redrive's
//! own: a message the broker refuses closes only that channel (and the broker gives the
//! dead letter being moved back to the dead-letter queue).

use super::connection::Connector;
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::pipeline::failure::without_failure_headers;
use crate::pipeline::policy::QueuePolicy;
use crate::pipeline::redrive::{Redrive, RedriveReport, action_of, dead_letter_code, verdict};
use crate::wire::limits;
use crate::wire::properties::republished;
use lapin::Channel;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long one step (a `basic.get`, a publish and its confirm) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one message is sent again while the broker does not take it for now.
const WEATHER: Duration = Duration::from_secs(30);

/// Moves (or, in a dry run, examines) the dead letters of `policy`'s queue that are in
/// `dead_letter_queue` when it starts.
pub(crate) async fn redrive(
    connector: &Connector,
    policy: &QueuePolicy,
    dead_letter_queue: &str,
    how: Redrive,
) -> Result<RedriveReport> {
    let queue = policy.queue.to_string();
    let what = format!("redriving `{dead_letter_queue}`");
    connector
        .with_channel(Instant::now() + STEP_TIMEOUT, &what, |ch| async move {
            run(
                &ch,
                policy,
                dead_letter_queue,
                &queue,
                how,
                connector.frame_max(),
            )
            .await
        })
        .await
}

async fn run(
    ch: &Channel,
    policy: &QueuePolicy,
    dead_letter_queue: &str,
    queue: &str,
    how: Redrive,
    frame_max: usize,
) -> Result<RedriveReport> {
    let reading = || format!("reading dead-letter queue `{dead_letter_queue}`");
    let found = step(ch.queue_declare(
        dead_letter_queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    ))
    .await
    .and_then(|r| r.map_err(Error::amqp(reading())))?
    .message_count() as usize;
    if !how.dry_run {
        step(ch.confirm_select(ConfirmSelectOptions::default()))
            .await?
            .map_err(Error::amqp("enabling confirms for the redrive"))?;
    }
    let mut report = RedriveReport {
        found,
        ..RedriveReport::default()
    };
    // Only what was there at the start: a message that fails again meanwhile comes back
    // to the end of the queue and is not taken a second time.
    for _ in 0..found.min(how.max) {
        let got = step(ch.basic_get(dead_letter_queue.into(), BasicGetOptions { no_ack: false }))
            .await?
            .map_err(Error::amqp(reading()))?;
        let Some(got) = got else { break };
        let delivery = got.delivery;
        let message = Arc::new(Message {
            queue: policy.queue.clone(),
            exchange: delivery.exchange.clone(),
            routing_key: delivery.routing_key.clone(),
            redelivered: delivery.redelivered,
            offset: None,
            properties: delivery.properties.clone(),
            body: delivery.data.clone(),
        });
        report.add(
            dead_letter_code(&message),
            action_of(&message.body),
            verdict(policy, &message),
        );
        if how.dry_run {
            continue;
        }
        match move_back_through_weather(ch, queue, &delivery, frame_max).await {
            Ok(()) => {
                step(delivery.acker.ack(BasicAckOptions::default()))
                    .await?
                    .map_err(Error::amqp(format!(
                        "acknowledging in `{dead_letter_queue}`"
                    )))?;
                report.moved += 1;
            }
            Err(e) => {
                let _ = step(delivery.acker.nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                }))
                .await;
                report.error = Some(e.to_string());
                break;
            }
        }
    }
    // In a dry run, what was looked at goes back when the channel closes.
    Ok(report)
}

/// [`move_back`], sent again while the broker does not take it for now (a nack from a
/// queue electing a leader or full for a moment), with backoff, for up to [`WEATHER`];
/// a refusal, or the redrive's channel gone, stops the redrive at once.
async fn move_back_through_weather(
    ch: &Channel,
    queue: &str,
    delivery: &lapin::message::Delivery,
    frame_max: usize,
) -> Result<()> {
    let until = Instant::now() + WEATHER;
    let mut pause = Duration::from_millis(100);
    loop {
        match move_back(ch, queue, delivery, frame_max).await {
            Err(e) if e.is_retryable() && ch.status().connected() && Instant::now() < until => {
                tracing::warn!(queue, error = %e, ?pause, "redrive: the broker did not take a message; sending it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// Publishes a dead letter back to `queue`, with the failure bookkeeping removed, as
/// eventrabbit sends every message on (JSON, persistent, its ids and `reply_to` kept).
async fn move_back(
    ch: &Channel,
    queue: &str,
    delivery: &lapin::message::Delivery,
    frame_max: usize,
) -> Result<()> {
    let headers =
        without_failure_headers(delivery.properties.headers().clone().unwrap_or_default());
    let props = republished(&delivery.properties, headers);
    limits::check_properties(&props, frame_max)?;
    let sending = || format!("moving a dead letter back to `{queue}`");
    let confirm = step(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions {
            mandatory: true,
            immediate: false,
        },
        &delivery.data,
        props,
    ))
    .await?
    .map_err(Error::amqp(sending()))?;
    let confirm = step(confirm).await?.map_err(Error::amqp(sending()))?;
    if confirm.is_nack() {
        return Err(Error::Nacked {
            exchange: String::new(),
            routing_key: queue.to_owned(),
        });
    }
    if let Some(returned) = confirm.take_message() {
        return Err(Error::Unroutable {
            exchange: String::new(),
            routing_key: queue.to_owned(),
            reply_text: returned.reply_text.to_string(),
        });
    }
    Ok(())
}

/// One broker round trip, bounded.
async fn step<F: Future>(fut: F) -> Result<F::Output> {
    tokio::time::timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| Error::Unavailable(STEP_TIMEOUT, "redriving dead letters".to_owned()))
}
