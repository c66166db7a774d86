//! The stream consumer: reads a log in order through the pipeline, retries failures in
//! place, and keeps a named consumer's position on the broker.

use super::client::chunk::Record;
use super::client::{Client, ClientError, OffsetSpecification, Subscription, code};
use super::connect::Streams;
use super::connect::missing_log;
use super::message::Reader;
use crate::config::{StartAt, StreamConsumer, TracePropagation};
use crate::error::{Error, Result};
use crate::handler::context::Message;
use crate::pipeline::dead_reason::DeadReason;
use crate::pipeline::handle::handle;
use crate::pipeline::in_place::{InPlace, RetryInPlace};
use crate::pipeline::policy::QueuePolicy;
use crate::pipeline::transport::Transport;
use crate::telemetry::health::{ConsumerSlot, ConsumerState, StuckMessage};
use crate::telemetry::trace;
use rabbitmq_stream_protocol::message::Message as StreamMessage;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What one stream consumer works with.
#[derive(Debug)]
pub(crate) struct StreamRun<'a, T> {
    pub(crate) streams: &'a Streams,
    pub(crate) transport: &'a T,
    pub(crate) spec: &'a StreamConsumer,
    pub(crate) policy: &'a QueuePolicy,
    pub(crate) slot: &'a ConsumerSlot,
    pub(crate) shutdown: &'a CancellationToken,
    /// Cancelled when a shutdown's deadline passed: a handler still running is left.
    pub(crate) abort: &'a CancellationToken,
    pub(crate) trace_propagation: TracePropagation,
    pub(crate) max_reconnect_delay: Duration,
    /// Told once the reader is first subscribed to the log.
    pub(crate) ready: &'a parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// How a session ended without an error.
enum Ended {
    /// Shutdown.
    Stopped,
    /// The subscription was live and then ended (the stream client's connection closed,
    /// or it reported an error) before the next event came: weather, or an event the
    /// client cannot read, which ends every subscription at the same offset.
    Lost(Error),
}

/// A subscription that ends this many times in a row at the same offset, with nothing
/// read, means the event there cannot be read by the stream client: it is set aside.
const UNREADABLE_AFTER: u32 = 5;

/// Reads the log until shutdown, starting over (after the last event handled) when the
/// connection is lost. The backoff between attempts grows while no event is handled. An
/// event the client cannot read (every subscription ends at its offset) is set aside, a
/// dead letter with code `unreadable` naming its offset, and the reader goes on after it;
/// health names it meanwhile.
pub(crate) async fn run<T: Transport>(run: StreamRun<'_, T>) -> Result<()> {
    // The offset to read next, once known (an event handled, or a start at an offset).
    let mut next: Option<u64> = None;
    let mut failures = 0u32;
    // The offset subscriptions keep ending at, and how many times in a row.
    let mut stalled: Option<(u64, u32)> = None;
    // Whether a session ever subscribed: a stream port refusing before that is a wrong
    // setup (said at once), after it a node restarting (weather).
    let mut subscribed = false;
    loop {
        if run.shutdown.is_cancelled() {
            return Ok(());
        }
        let before = next;
        let e = match session(&run, &mut next, &mut subscribed).await {
            Ok(Ended::Stopped) => return Ok(()),
            Err(e @ Error::CannotConnect { .. }) if subscribed => e,
            Err(e) if !e.is_retryable() => return Err(e),
            Err(e) => e,
            Ok(Ended::Lost(e)) => {
                if next != before && before.is_some() {
                    stalled = None;
                } else if let Some(offset) = next {
                    let times = match stalled {
                        Some((at, n)) if at == offset => n + 1,
                        _ => 1,
                    };
                    stalled = Some((offset, times));
                    let reason = format!(
                        "reading the event at offset {offset} of log `{}` failed {times} times in a row: {e}",
                        run.spec.log
                    );
                    run.slot.stuck(vec![StuckMessage {
                        message_id: None,
                        given_back: times,
                        reason,
                    }]);
                    if times >= UNREADABLE_AFTER && set_aside(&run, offset, &e).await {
                        next = Some(offset.saturating_add(1));
                        stalled = None;
                        failures = 0;
                        run.slot.stuck(Vec::new());
                        continue;
                    }
                }
                e
            }
        };
        if next != before && before.is_some() {
            // It got further: the trouble is new.
            failures = 0;
        }
        failures += 1;
        run.slot.error(ConsumerState::Recovering, &e);
        let delay =
            Duration::from_millis(100 * 2u64.pow(failures.min(7))).min(run.max_reconnect_delay);
        tracing::warn!(log = %run.spec.log, error = %e, ?delay, "stream consumer interrupted, resuming");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = run.shutdown.cancelled() => return Ok(()),
        }
    }
}

/// Sets aside the event at `offset`, which the stream client cannot read: a dead letter
/// (no body, code `unreadable`) to the consumer's dead-letter queue. `false` if that
/// could not be sent either (the event is not skipped then).
async fn set_aside<T: Transport>(run: &StreamRun<'_, T>, offset: u64, e: &Error) -> bool {
    let reason = DeadReason::Unreadable {
        offset,
        detail: e.to_string(),
    };
    let message = Message {
        queue: run.policy.queue.clone(),
        exchange: "".into(),
        routing_key: "".into(),
        redelivered: false,
        offset: Some(offset),
        properties: lapin::BasicProperties::default(),
        body: Vec::new(),
    };
    match run
        .transport
        .dead_letter(&message, &reason, &run.policy.settings)
        .await
    {
        Ok(()) => {
            tracing::error!(log = %run.spec.log, offset, error = %e, "an event the stream client cannot read was set aside (dead letter `unreadable`); reading goes on after it");
            run.slot.note(format!(
                "set aside the unreadable event at offset {offset}: {e}"
            ));
            true
        }
        Err(sent) => {
            tracing::error!(log = %run.spec.log, offset, error = %sent, "could not set aside an unreadable event; trying again");
            false
        }
    }
}

/// The position of a named consumer: what was handled, what is stored.
struct Position {
    handled: Option<u64>,
    stored: Option<u64>,
    since_store: u64,
}

async fn session<T: Transport>(
    run: &StreamRun<'_, T>,
    next: &mut Option<u64>,
    subscribed: &mut bool,
) -> Result<Ended> {
    let client = run.streams.connect_member(&run.spec.log).await?;
    let start = match *next {
        Some(offset) => OffsetSpecification::Offset(offset),
        None => first_offset(run, &client).await?,
    };
    if let OffsetSpecification::Offset(offset) = start {
        *next = Some(offset);
    }
    let mut consumer = client
        .subscribe(&run.spec.log, start)
        .await
        .map_err(|e| match e {
            ClientError::Refused(code::STREAM_DOES_NOT_EXIST) => missing_log(&run.spec.log),
            e => Error::Stream(format!("subscribing to log `{}`: {e}", run.spec.log)),
        })?;
    *subscribed = true;
    tracing::info!(log = %run.spec.log, name = ?run.spec.name, "reading the event log");
    run.slot.running();
    if let Some(ready) = run.ready.lock().take() {
        let _ = ready.send(());
    }
    let mut position = Position {
        handled: None,
        stored: None,
        since_store: 0,
    };
    let mut store_timer = tokio::time::interval(run.spec.store_interval);
    store_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    store_timer.reset();
    let mut reader = Reader::default();
    // A record read ahead of a group (an unreadable one), taken next.
    let mut pending: Option<Record> = None;
    let cancelled = run.shutdown.cancelled();
    tokio::pin!(cancelled);
    loop {
        let read = match pending.take() {
            Some(record) => Ok(record),
            None => tokio::select! {
                biased;
                () = &mut cancelled => {
                    store(run, &consumer, &mut position).await;
                    consumer.close().await;
                    return Ok(Ended::Stopped);
                }
                read = consumer.next() => read,
                _ = store_timer.tick() => {
                    store(run, &consumer, &mut position).await;
                    continue;
                }
            },
        };
        let record = match read {
            Ok(record) => record,
            Err(why) => return Ok(Ended::Lost(lost(run, &why))),
        };
        let first = match record.message {
            Ok(message) => (record.offset, message),
            Err(detail) => {
                // Poison in the log: set aside at its offset, and reading goes on.
                let e = Error::Stream(format!(
                    "the event at offset {} of log `{}` cannot be read: {detail}",
                    record.offset, run.spec.log
                ));
                *next = Some(record.offset);
                if !set_aside(run, record.offset, &e).await {
                    return Ok(Ended::Lost(e));
                }
                *next = Some(record.offset.saturating_add(1));
                position.handled = Some(record.offset);
                position.since_store += 1;
                continue;
            }
        };
        // A batch handler gets every event already read at once.
        let (group, end) = match run.policy.has_batches() {
            true => read_ahead(&mut consumer, first, &mut pending, run),
            false => (vec![first], None),
        };
        let messages: Vec<Message> = group
            .iter()
            .map(|(offset, m)| reader.message(&run.policy.queue, *offset, m))
            .collect();
        let mut firsts = match messages.len() {
            1 => Vec::new(),
            _ => first_attempts(run, &messages).await,
        }
        .into_iter();
        for ((offset, _), message) in group.iter().zip(messages) {
            let handled = tokio::select! {
                handled = handle_event(run, *offset, message, firsts.next()) => handled,
                () = run.abort.cancelled() => false,
            };
            if !handled {
                // Shutdown while waiting to retry: this event is not handled.
                store(run, &consumer, &mut position).await;
                consumer.close().await;
                return Ok(Ended::Stopped);
            }
            *next = Some(offset + 1);
            position.handled = Some(*offset);
            position.since_store += 1;
            if position.since_store >= run.spec.store_every {
                store(run, &consumer, &mut position).await;
            }
        }
        if let Some(end) = end {
            return Ok(end);
        }
    }
}

/// The subscription ended (why).
fn lost<T>(run: &StreamRun<'_, T>, why: &str) -> Error {
    Error::Stream(format!("reading log `{}`: {why}", run.spec.log))
}

/// Where a consumer starts: after its stored position if it is named and has one, else
/// where it was told to. Only the broker's "no offset stored" means that there is none:
/// any other error (a lost connection, a timeout, a leader away) fails the session, which
/// is tried again with backoff and shown in health, instead of starting over from the
/// configured position (a full replay, or events skipped).
async fn first_offset<T>(run: &StreamRun<'_, T>, client: &Client) -> Result<OffsetSpecification> {
    if let Some(name) = &run.spec.name {
        let stored = client.query_offset(name, &run.spec.log).await;
        if let Some(offset) = stored_position(stored, &run.spec.log, name)? {
            tracing::info!(log = %run.spec.log, %name, offset, "resuming after the stored position");
            return Ok(OffsetSpecification::Offset(offset.saturating_add(1)));
        }
        tracing::info!(log = %run.spec.log, %name, "no stored position: starting as configured");
    }
    Ok(match run.spec.start {
        StartAt::First => OffsetSpecification::First,
        StartAt::Last => OffsetSpecification::Last,
        StartAt::Next => OffsetSpecification::Next,
        StartAt::Offset(o) => OffsetSpecification::Offset(o),
        StartAt::Timestamp(t) => {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
            OffsetSpecification::Timestamp(ms)
        }
    })
}

/// What the broker said of `name`'s stored position on `log`: `Some(offset)`, or `None`
/// for "no offset stored" only. Any other answer is an error, never a silent start from
/// the configured position: a missing log is permanent, the rest (a lost connection, no
/// answer in time, a refusal) is retried with backoff and shown in health.
fn stored_position(
    stored: std::result::Result<Option<u64>, ClientError>,
    log: &str,
    name: &str,
) -> Result<Option<u64>> {
    match stored {
        Ok(offset) => Ok(offset),
        Err(ClientError::Refused(code::STREAM_DOES_NOT_EXIST)) => Err(missing_log(log)),
        Err(e) => Err(Error::Stream(format!(
            "querying the stored position of consumer `{name}` on log `{log}`: {e}"
        ))),
    }
}

/// Stores a named consumer's position, if it moved.
async fn store<T>(run: &StreamRun<'_, T>, consumer: &Subscription, position: &mut Position) {
    let Some(name) = &run.spec.name else {
        return;
    };
    let Some(handled) = position.handled else {
        return;
    };
    if position.stored == Some(handled) {
        return;
    }
    match consumer.store_offset(name, handled).await {
        Ok(()) => {
            position.stored = Some(handled);
            position.since_store = 0;
        }
        Err(e) => {
            tracing::warn!(log = %run.spec.log, error = %e, "could not store the position; trying again later")
        }
    }
}

/// The most events handed to batch handlers together.
const MAX_GROUP: usize = 1_000;

/// `first` and the events already read after it (up to [`MAX_GROUP`]), without waiting
/// for more; an unreadable one ends the group and is kept in `pending`; and how the
/// subscription ended, if it did meanwhile.
fn read_ahead<T>(
    consumer: &mut Subscription,
    first: (u64, StreamMessage),
    pending: &mut Option<Record>,
    run: &StreamRun<'_, T>,
) -> (Vec<(u64, StreamMessage)>, Option<Ended>) {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match consumer.ready() {
            Some(Ok(Record {
                offset,
                message: Ok(message),
            })) => group.push((offset, message)),
            Some(Ok(unreadable)) => {
                *pending = Some(unreadable);
                break;
            }
            Some(Err(why)) => return (group, Some(Ended::Lost(lost(run, &why)))),
            None => break,
        }
    }
    (group, None)
}

/// One event's first attempt: how it settled, and the retry it asked for.
type Attempt = (Result<()>, Option<RetryInPlace>);

/// The first attempts of a group of events, run together so that those of a batch
/// handler join one batch, which runs as soon as all have joined (not after its window);
/// their retries then run one event after the other, in log order.
async fn first_attempts<T: Transport>(
    run: &StreamRun<'_, T>,
    messages: &[Message],
) -> Vec<Attempt> {
    let attempts = messages
        .iter()
        .map(|message| async move { attempt(run, &Arc::new(message.clone())).await });
    let mut all = std::pin::pin!(futures_util::future::join_all(attempts));
    // Polled once: every event has joined its batch (unless a layer waits before).
    if let Some(done) = futures_util::future::poll_immediate(&mut all).await {
        return done;
    }
    run.policy.flush_batches();
    all.await
}

/// Handles one event until it is settled: handled, or dead-lettered. Retries happen in
/// place after their delay; a dead letter that cannot be sent is tried again (the
/// consumer says it is stuck meanwhile) rather than skipping the event. `first` is its
/// first attempt when that was made already (with its group). Returns `false` if
/// shutdown came first.
async fn handle_event<T: Transport>(
    run: &StreamRun<'_, T>,
    offset: u64,
    message: Message,
    mut first: Option<Attempt>,
) -> bool {
    let mut message = Arc::new(message);
    let mut stuck_for = Duration::from_millis(500);
    let mut tries = 0u32;
    loop {
        let (settled, retry) = match first.take() {
            Some(made) => made,
            None => attempt(run, &message).await,
        };
        let wait = match settled {
            Ok(()) => match retry {
                None => {
                    if tries > 0 {
                        run.slot.stuck(Vec::new());
                    }
                    return true;
                }
                Some(retry) => {
                    message = Arc::new(retry.next_try(&message));
                    retry.delay
                }
            },
            // Its retry or dead letter cannot be sent: tried again with backoff (never
            // skipped), and named in health (log, offset, message id) from the second try.
            Err(e) => {
                tries = tries.saturating_add(1);
                let reason = format!(
                    "cannot settle the event at offset {} of log `{}`: {e}",
                    offset, run.spec.log
                );
                tracing::warn!(log = %run.spec.log, offset, error = %e, "could not settle an event; trying again");
                if tries >= 2 || !e.is_retryable() {
                    run.slot.stuck(vec![StuckMessage {
                        message_id: message
                            .properties
                            .message_id()
                            .as_ref()
                            .map(|id| id.to_string()),
                        given_back: tries,
                        reason,
                    }]);
                }
                stuck_for = (stuck_for * 2).min(Duration::from_secs(30));
                stuck_for
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = run.shutdown.cancelled() => return false,
        }
    }
}

/// One attempt at an event: how it settled, and the retry it asked for.
async fn attempt<T: Transport>(run: &StreamRun<'_, T>, message: &Arc<Message>) -> Attempt {
    let in_place = InPlace::new(run.transport);
    let settled = settle_once(run, &in_place, message).await;
    (settled, in_place.take_retry())
}

async fn settle_once<T: Transport>(
    run: &StreamRun<'_, T>,
    transport: &InPlace<'_, T>,
    message: &Arc<Message>,
) -> Result<()> {
    let (incoming, from_header) = trace::incoming_trace(message);
    let span = trace::delivery_span(message, &incoming);
    let propagate = trace::propagates(run.trace_propagation, from_header, &span);
    trace::in_trace(incoming, propagate, handle(run.policy, transport, message))
        .instrument(span)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_no_offset_stored_means_start_as_configured() {
        let at = |r| stored_position(r, "log", "reader");
        assert_eq!(at(Ok(Some(41))).unwrap(), Some(41));
        assert_eq!(at(Ok(None)).unwrap(), None);
        let missing = at(Err(ClientError::Refused(code::STREAM_DOES_NOT_EXIST))).unwrap_err();
        assert!(!missing.is_retryable(), "{missing}");
        for weather in [
            ClientError::Lost("the stream connection closed".into()),
            ClientError::Refused(16),
            ClientError::Lost("no answer within 10s".into()),
        ] {
            let e = at(Err(weather)).unwrap_err();
            assert!(e.is_retryable(), "{e}");
            assert!(
                e.to_string()
                    .contains("stored position of consumer `reader`"),
                "{e}"
            );
        }
    }
}
