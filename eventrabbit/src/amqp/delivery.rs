//! The delivery loop of one consumer channel: each delivery runs in it until its handler
//! waits, then in a task of its own; settled by outcome, acknowledged in batches.

use super::ack::{self, Settle, Settlements};
use super::client::Client;
use crate::config::ConsumeChannel;
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::pipeline::handle::handle;
use crate::pipeline::policy::QueuePolicy;
use crate::telemetry::trace;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A consumer tag need only be unique on its channel, and each consumer has a channel of
/// its own. Kept short: lapin hashes it for every frame it routes to the consumer.
pub(super) const CONSUMER_TAG: &str = "eventrabbit";

/// What each delivery task of one queue shares.
pub(super) struct QueueContext {
    pub(super) policy: QueuePolicy,
    pub(super) client: Arc<Client>,
}

/// The delivery loop: runs each delivery, giving it a task of its own once its handler
/// waits, and settles what finished, until shutdown or a channel error.
pub(super) async fn deliver(
    ctx: &Arc<QueueContext>,
    spec: &ConsumeChannel,
    tracker: &TaskTracker,
    ch: &lapin::Channel,
    consumer: &mut lapin::Consumer,
    acks: &mut Settlements,
) -> Result<()> {
    let shared = &ctx.client;
    // Sends the acks of a batch that did not fill up within `ACK_DELAY`.
    let ack_timer = tokio::time::sleep(ack::ACK_DELAY);
    tokio::pin!(ack_timer);
    let mut timer_armed = false;
    // Made once: a `cancelled()` future made anew each turn would register and
    // unregister a waiter under the token's lock for every delivery.
    let cancelled = shared.shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => {
                let _ = ch.basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default()).await;
                return Ok(());
            }
            Some((delivery_tag, how)) = acks.reported() => acks.settle(delivery_tag, how),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let delivery_tag = delivery.delivery_tag;
                    // Moved to the heap once, here; the task's future holds only pointers.
                    let message = received(&ctx.policy.queue, delivery);
                    // Most handlers finish without waiting on anything: run them right here,
                    // and give only those that wait a task of their own.
                    let mut task = Box::pin(tracker.track_future(process(ctx.clone(), message)));
                    match futures_util::future::poll_immediate(&mut task).await {
                        Some(how) => acks.settle(delivery_tag, how),
                        None => {
                            let reporter = acks.reporter();
                            tokio::spawn(async move { reporter.settle(delivery_tag, task.await) });
                        }
                    }
                }
                // The channel or connection failed while consuming: reconnect, never give up.
                Some(Err(e)) => return Err(Error::Connection(e)),
                None => {
                    return Err(Error::Unavailable(Duration::ZERO, format!("consumer of queue `{}` was cancelled by the broker", spec.queue)));
                }
            },
            () = &mut ack_timer, if timer_armed => acks.flush(),
        }
        if !acks.pending() {
            timer_armed = false;
        } else if !timer_armed {
            timer_armed = true;
            ack_timer
                .as_mut()
                .reset(tokio::time::Instant::now() + ack::ACK_DELAY);
        }
    }
}

/// A delivery as the handlers see it.
fn received(queue: &Arc<str>, delivery: Delivery) -> Arc<Message> {
    let Delivery {
        data,
        properties,
        exchange,
        routing_key,
        redelivered,
        ..
    } = delivery;
    Arc::new(Message {
        queue: queue.clone(),
        exchange,
        routing_key,
        redelivered,
        properties,
        body: data,
    })
}

/// Handles one delivery from decision to acknowledgement, in its span and trace.
async fn process(ctx: Arc<QueueContext>, message: Arc<Message>) -> Settle {
    let (incoming, from_header) = trace::incoming_trace(&message);
    let span = trace::delivery_span(&message, &incoming);
    let propagate = trace::propagates(ctx.client.config.trace_propagation, from_header, &span);
    let settled = trace::in_trace(
        incoming,
        propagate,
        handle(&ctx.policy, &ctx.client.publisher, &message),
    )
    .instrument(span)
    .await;
    match settled {
        Ok(()) => Settle::Ack,
        Err(e) => {
            // Nothing was lost: leave it to the broker to redeliver, after a pause against hot loops.
            tracing::error!(queue = %ctx.policy.queue, error = %e, "could not settle message; requeueing it");
            tokio::time::sleep(Duration::from_secs(1)).await;
            Settle::Requeue
        }
    }
}
