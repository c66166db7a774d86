//! The consumer runner: one loop per queue; each delivery runs in it until its handler
//! waits, then in a task of its own; settled by outcome, acknowledged in batches.

use crate::ack::{self, Settle, Settlements};
use crate::consume_channel::ConsumeChannel;
use crate::context::Message;
use crate::delivery::{self, QueuePolicy};
use crate::health::{ConsumerSlot, ConsumerState};
use crate::registry;
use crate::runtime::Shared;
use crate::telemetry;
use crate::topology;
use crate::{Error, Result};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// What each delivery task of one queue shares.
struct QueueContext {
    policy: QueuePolicy,
    shared: Arc<Shared>,
}

/// Runs `spec` until shutdown, reconnecting when the connection drops.
pub(crate) async fn run(shared: Arc<Shared>, spec: ConsumeChannel) -> Result<()> {
    let routes = registry::routes(&spec.queue, spec.actions.as_deref())?;
    let settings = spec.resolve(&shared.config.queue, &shared.config.retry);
    let ctx = Arc::new(QueueContext {
        policy: QueuePolicy::new(&spec.queue, routes, settings),
        shared: shared.clone(),
    });
    let _running = shared.consumer_started();
    let slot = shared.consumer_slot(&spec.queue);
    let tracker = slot.tracker.clone();
    let mut failures = 0u32;
    let result = loop {
        match session(&ctx, &spec, &tracker, &slot).await {
            Ok(()) => break Ok(()),
            Err(_) if shared.shutdown.is_cancelled() => break Ok(()),
            Err(e) if is_fatal(&e) => break Err(e),
            Err(e) => {
                // A session that got as far as consuming starts the backoff over.
                if slot.snapshot().state == ConsumerState::Running {
                    failures = 0;
                }
                slot.failed(&e);
                failures += 1;
                let delay = Duration::from_millis(100 * 2u64.pow(failures.min(7)))
                    .min(shared.config.max_reconnect_delay);
                tracing::warn!(queue = %spec.queue, error = %e, ?delay, "consumer interrupted, resuming");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shared.shutdown.cancelled() => break Ok(()),
                }
            }
        }
    };
    tracker.close();
    tracker.wait().await;
    slot.set(ConsumerState::Stopped);
    result
}

/// Errors that reconnecting cannot fix: the topology is refused by the broker.
fn is_fatal(e: &Error) -> bool {
    match e {
        Error::Amqp { source, .. } => {
            source.is_amqp_soft_error() || source.is_amqp_hard_error() && !source.can_be_recovered()
        }
        Error::UnknownAction { .. } | Error::DuplicateAction { .. } | Error::InvalidUrl(_) => true,
        _ => false,
    }
}

/// One connection's worth of consuming: declare, consume, dispatch, until it drops or shutdown.
async fn session(
    ctx: &Arc<QueueContext>,
    spec: &ConsumeChannel,
    tracker: &TaskTracker,
    slot: &ConsumerSlot,
) -> Result<()> {
    let shared = &ctx.shared;
    let step = std::sync::Mutex::new(OPENING);
    let setup = tokio::time::timeout(SETUP_TIMEOUT, open(ctx, spec, &step));
    let (ch, mut consumer) = tokio::select! {
        opened = setup => match opened {
            Ok(opened) => opened?,
            // Never hang on a broker reply that does not come: give up on this channel and retry.
            Err(_) => {
                let step = *step.lock().unwrap_or_else(|e| e.into_inner());
                if step == OPENING {
                    // The broker does not even answer channel.open: the connection is broken.
                    shared.connector.abandon();
                }
                return Err(Error::Unavailable(
                    SETUP_TIMEOUT,
                    format!("{step} for queue `{}`", spec.queue),
                ));
            }
        },
        _ = shared.shutdown.cancelled() => return Ok(()),
    };
    tracing::info!(queue = %spec.queue, prefetch = ctx.policy.settings.prefetch, "consuming");
    slot.set(ConsumerState::Running);
    let mut acks = Settlements::new(ch.clone(), spec.queue.clone(), ctx.policy.settings.prefetch);
    let result = deliver(ctx, spec, tracker, &ch, &mut consumer, &mut acks).await;
    if result.is_ok() {
        // Shutdown: let in-flight handlers finish and their acks go out before closing.
        tracker.close();
        acks.finish().await;
        tracker.wait().await;
        tracker.reopen();
        let _ = ch.close(200, "shutdown".into()).await;
        tracing::info!(queue = %spec.queue, "consumer stopped");
    }
    // On a channel error the old tasks finish on their own (their acks are void: the
    // broker redelivers) while the next session starts at once.
    result
}

const OPENING: &str = "opening a channel";

/// A consumer tag need only be unique on its channel, and each consumer has a channel of
/// its own. Kept short: lapin hashes it for every frame it routes to the consumer.
const CONSUMER_TAG: &str = "eventrabbit";

/// How long opening a channel, declaring the topology and starting to consume may take
/// before the attempt is abandoned and retried.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a channel, declares the topology and starts consuming; `step` says how far it got.
async fn open(
    ctx: &QueueContext,
    spec: &ConsumeChannel,
    step: &std::sync::Mutex<&'static str>,
) -> Result<(lapin::Channel, lapin::Consumer)> {
    let set = |s: &'static str| *step.lock().unwrap_or_else(|e| e.into_inner()) = s;
    let what = format!("consuming queue `{}`", spec.queue);
    let ch = ctx.shared.connector.channel(None, &what).await?;
    set("declaring the topology");
    topology::declare(&ch, spec, &ctx.policy.settings).await?;
    set("starting to consume");
    let consumer = ch
        .basic_consume(
            spec.queue.as_str().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp(what))?;
    Ok((ch, consumer))
}

/// The delivery loop: runs each delivery, giving it a task of its own once its handler
/// waits, and settles what finished, until shutdown or a channel error.
async fn deliver(
    ctx: &Arc<QueueContext>,
    spec: &ConsumeChannel,
    tracker: &TaskTracker,
    ch: &lapin::Channel,
    consumer: &mut lapin::Consumer,
    acks: &mut Settlements,
) -> Result<()> {
    let shared = &ctx.shared;
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
    let (trace, from_header) = telemetry::incoming_trace(&message);
    let span = telemetry::delivery_span(&message, &trace);
    let propagate = telemetry::propagates(ctx.shared.config.trace_propagation, from_header, &span);
    let settled = telemetry::in_trace(
        trace,
        propagate,
        delivery::handle(&ctx.policy, &ctx.shared.publisher, &message),
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
