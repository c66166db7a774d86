//! The delivery loop of one consumer channel: each delivery runs in it until its handler
//! waits, then in a task of its own; settled by outcome, acknowledged in batches.

use super::ack::{self, Settle, Settlements};
use super::client::Client;
use super::in_doubt::{InDoubt, Outcome};
use super::lanes::{Lanes, Turn, TurnDone};
use super::recording::Recording;
use super::topology;
use super::unsettled::{MessageKey, Unsettled};
use crate::config::ConsumeChannel;
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::handle::handle;
use crate::pipeline::in_place::InPlace;
use crate::pipeline::order_key::key_of;
use crate::pipeline::policy::QueuePolicy;
use crate::pipeline::transport::Transport;
use crate::telemetry::health::ConsumerSlot;
use crate::telemetry::trace;
use futures_util::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::BasicCancelOptions;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A consumer tag need only be unique on its channel, and each consumer has a channel of
/// its own. Kept short: lapin hashes it for every frame it routes to the consumer.
pub(super) const CONSUMER_TAG: &str = "eventrabbit";

/// What each delivery task of one queue shares.
pub(super) struct QueueContext {
    pub(super) spec: ConsumeChannel,
    pub(super) policy: QueuePolicy,
    pub(super) client: Arc<Client>,
    pub(super) slot: Arc<ConsumerSlot>,
    pub(super) unsettled: Unsettled,
    /// The lanes of a keyed consumer ([`ConsumeChannel::order_by`]).
    pub(super) lanes: Option<Arc<Lanes>>,
    /// Told when the consumer first consumes ([`Handle::start`](crate::Handle::start)).
    pub(super) ready: parking_lot::Mutex<Option<Ready>>,
    /// Cancelled to stop consuming: at shutdown, or when a partition is handed over.
    pub(super) stop: tokio_util::sync::CancellationToken,
}

/// Told once the consumer is consuming (its topology declared, `basic.consume` active).
pub(crate) type Ready = tokio::sync::oneshot::Sender<()>;

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
    let cancelled = ctx.stop.cancelled();
    tokio::pin!(cancelled);
    let check_every = shared
        .config
        .topology_check_interval
        .filter(|_| !spec.bindings.is_empty());
    let mut topology_check =
        tokio::time::interval(check_every.unwrap_or(Duration::from_secs(86_400)));
    topology_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    topology_check.reset();
    let checking = Arc::new(AtomicBool::new(false));
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => {
                if spec.exclusive_consumer {
                    // A partition stays ours until its channel closes, after the handlers
                    // running now: what was delivered and not started goes back in order
                    // then, and no other instance can start on a key still running here.
                    return Ok(());
                }
                let cancel = ch.basic_cancel(CONSUMER_TAG.into(), BasicCancelOptions::default());
                tokio::select! {
                    _ = cancel => {}
                    () = shared.abort.cancelled() => {}
                }
                return Ok(());
            }
            _ = topology_check.tick(), if check_every.is_some() => {
                if !checking.swap(true, Ordering::AcqRel) {
                    shared.connector.spawn(check_topology(ctx.clone(), checking.clone()));
                }
            }
            Some((delivery_tag, how)) = acks.reported() => acks.settle(delivery_tag, how),
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let delivery_tag = delivery.delivery_tag;
                    // Moved to the heap once, here; the task's future holds only pointers.
                    let message = received(&ctx.policy.queue, delivery);
                    let turn = match (&ctx.lanes, &spec.order_by) {
                        (Some(lanes), Some(by)) => Some(lanes.join(key_of(by, &message))),
                        _ => None,
                    };
                    // Most handlers finish without waiting on anything: run them right here,
                    // and give only those that wait a task of their own.
                    let mut task = Box::pin(tracker.track_future(in_turn(ctx.clone(), message, turn)));
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
                None => return Err(Error::Cancelled { queue: spec.queue.clone() }),
            },
            () = &mut ack_timer, if timer_armed => acks.flush_all(),
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

/// Declares the queue's exchanges and bindings again, on a channel of its own: an exchange
/// deleted and re-created by someone else (which drops its bindings) delivers again.
async fn check_topology(ctx: Arc<QueueContext>, checking: Arc<AtomicBool>) {
    let queue = &ctx.spec.queue;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let what = format!("checking the bindings of queue `{queue}`");
    let checked = ctx.client.connector.with_channel(deadline, &what, |ch| {
        let ctx = ctx.clone();
        async move { topology::bind(&ch, &ctx.spec, &ctx.policy.settings).await }
    });
    match tokio::time::timeout_at(deadline, checked).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(queue = %queue, error = %e, "could not re-assert the queue's bindings");
            ctx.slot.note(format!("re-asserting the bindings: {e}"));
        }
        Err(_) => tracing::warn!(queue = %queue, "re-asserting the queue's bindings timed out"),
    }
    checking.store(false, Ordering::Release);
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
        offset: None,
        properties,
        body: data,
    })
}

/// [`guarded`], after the key's delivery before it when the consumer is keyed; the key's
/// next delivery runs once this one is done.
async fn in_turn(
    ctx: Arc<QueueContext>,
    message: Arc<Message>,
    turn: Option<(Turn, Option<TurnDone>)>,
) -> Settle {
    let Some((turn, before)) = turn else {
        return guarded(ctx, message).await;
    };
    if let Some(before) = before {
        // Ends with `Err` only if that turn was dropped without sending: it ended too.
        let _ = before.await;
    }
    let settle = guarded(ctx, message).await;
    drop(turn);
    settle
}

/// [`process`], with any panic in it (a tracing layer, a metrics recorder, settlement
/// code: the handler's own are caught earlier) contained: the delivery is given back and
/// its prefetch slot freed, while the consumer goes on.
async fn guarded(ctx: Arc<QueueContext>, message: Arc<Message>) -> Settle {
    let processed = AssertUnwindSafe(process(ctx.clone(), message.clone()))
        .catch_unwind()
        .await;
    match processed {
        Ok(settle) => settle,
        Err(panic) => {
            let text = panic_text(&*panic);
            // Even logging may be what panicked.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                tracing::error!(queue = %ctx.policy.queue, panic = %text, "panicked while handling a delivery; giving it back");
            }));
            give_back(
                &ctx,
                &message,
                format!("panicked while handling a delivery: {text}"),
                None,
                None,
            )
            .await
        }
    }
}

/// Handles one delivery from decision to acknowledgement, in its span and trace.
async fn process(ctx: Arc<QueueContext>, message: Arc<Message>) -> Settle {
    let recording = Recording::new(&ctx.client);
    if ctx.unsettled.any() {
        let key = MessageKey::of(&message);
        if let Some(doubt) = ctx.unsettled.in_doubt(key) {
            // Its retry or dead letter was sent before and its confirm was late: never
            // send it twice, ask the broker's answer first.
            match doubt.outcome(ctx.client.settle_deadline()).await {
                Outcome::Taken => return settled(&ctx, key),
                Outcome::NotTaken => ctx.unsettled.not_taken(key),
                Outcome::Pending => {
                    let why = "the broker has not confirmed its retry or dead letter".to_owned();
                    return give_back(&ctx, &message, why, None, Some(doubt)).await;
                }
            }
        }
        if let Some(reason) = ctx.unsettled.pending_dead_letter(key) {
            // Its dead letter was decided before and could not be sent: send it now, without
            // running its handler again.
            let settings = &ctx.policy.settings;
            return match recording.dead_letter(&message, &reason, settings).await {
                Ok(()) => settled(&ctx, key),
                Err(e) => {
                    let why = format!("its dead letter cannot be sent: {e}");
                    give_back(&ctx, &message, why, Some(reason), recording.sent()).await
                }
            };
        }
    }
    let settled_now = if ctx.lanes.is_some() {
        retrying_in_place(&ctx, &recording, message.clone()).await
    } else {
        traced(&ctx, &recording, &message).await
    };
    match settled_now {
        Ok(()) => {
            if ctx.unsettled.any() {
                return settled(&ctx, MessageKey::of(&message));
            }
            Settle::Ack
        }
        // Weather for longer than `Config::settle_timeout`, or a dead letter the broker
        // refuses: nothing was lost, the broker has it back after a pause. Its retry or
        // dead letter, if taken (what failed came after it: the error reply to its caller)
        // or in doubt, is remembered and not sent again when the delivery comes back.
        Err(e) => {
            tracing::error!(queue = %ctx.policy.queue, error = %e, "could not settle message; giving it back");
            let why = format!("could not settle it: {e}");
            let sent = recording.sent();
            give_back(&ctx, &message, why, recording.unsent_dead_letter(), sent).await
        }
    }
}

/// [`handle`] in the message's span and trace.
async fn traced<T: Transport>(
    ctx: &QueueContext,
    transport: &T,
    message: &Arc<Message>,
) -> Result<()> {
    let (incoming, from_header) = trace::incoming_trace(message);
    let span = trace::delivery_span(message, &incoming);
    let propagate = trace::propagates(ctx.client.config.trace_propagation, from_header, &span);
    trace::in_trace(incoming, propagate, handle(&ctx.policy, transport, message))
        .instrument(span)
        .await
}

/// A keyed consumer's handling: retries run in place, after their delay, so the key's
/// next message waits for them. Shutdown during a delay gives the delivery back.
async fn retrying_in_place(
    ctx: &QueueContext,
    transport: &Recording<'_>,
    mut message: Arc<Message>,
) -> Result<()> {
    loop {
        let in_place = InPlace::new(transport);
        traced(ctx, &in_place, &message).await?;
        let Some(retry) = in_place.take_retry() else {
            return Ok(());
        };
        message = Arc::new(retry.next_try(&message));
        tokio::select! {
            () = tokio::time::sleep(retry.delay) => {}
            () = ctx.stop.cancelled() => return Err(Error::Shutdown),
        }
    }
}

/// Acknowledges a message that was given back before, and forgets it.
fn settled(ctx: &QueueContext, key: MessageKey) -> Settle {
    ctx.unsettled.settled(key);
    ctx.slot.stuck(ctx.unsettled.stuck());
    Settle::Ack
}

/// Gives a delivery back to the broker after a pause that grows with each give-back of
/// the same message (at most [`MAX_PAUSE`](super::unsettled::MAX_PAUSE); at once on
/// shutdown), and says in health which messages keep coming back.
async fn give_back(
    ctx: &QueueContext,
    message: &Message,
    why: String,
    dead_letter: Option<DeadReason>,
    in_doubt: Option<InDoubt>,
) -> Settle {
    let pause = ctx.unsettled.gave_back(message, why, dead_letter, in_doubt);
    ctx.slot.stuck(ctx.unsettled.stuck());
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        () = ctx.client.shutdown.cancelled() => {}
    }
    Settle::Requeue
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned())
}
