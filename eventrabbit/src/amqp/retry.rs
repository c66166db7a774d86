//! Retries through per-delay wait queues, and the dead-letter queue.
//!
//! A retry is published to `<queue>.retry.<ms>ms`, a queue with a message TTL whose
//! dead-letter target is the default exchange with the consumed queue's name as routing
//! key: after the delay the broker moves the message back to that queue only, never
//! through the exchange it first came from. The original is acknowledged only after the
//! broker confirmed the retry (or the dead letter), so a crash in between duplicates a
//! message but never loses it.
//!
//! Wait queues are declared once each (on a channel of their own, so a declaration the
//! broker refuses closes nothing else) and declared again when a retry finds one gone.

use super::connection::Connector;
use super::in_doubt::DoubtSlot;
use super::publisher::Publisher;
use crate::config::QueueType;
use crate::error::{Error, Result};
use crate::pipeline::transport::Outgoing;
use crate::wire::limits;
use crate::wire::names::retry_queue_name;
use lapin::BasicProperties;
use lapin::options::QueueDeclareOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How many times a retry or a dead letter the broker refuses is tried (the queue is
/// declared again in between: a wait queue may have expired) before it is given up.
const REFUSED_ATTEMPTS: u32 = 3;

/// The pause before the second attempt; doubled for each further one.
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause between two attempts.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// How long a declaration may take.
const DECLARE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a wait queue stays after it was last declared, beyond its message TTL.
pub(super) const LEASE_MARGIN_MS: i64 = 60_000;

/// How often a queue sent to is declared again. The broker deletes a wait queue unused
/// for its `x-expires` (TTL + [`LEASE_MARGIN_MS`]) even with messages inside, and
/// publishing into it is no use; only a declaration is. Declared again at least this
/// often while messages are sent to it, a wait queue outlives every message in it by
/// at least half the margin.
const RENEW_EVERY: Duration = Duration::from_millis(LEASE_MARGIN_MS as u64 / 2);

/// The wait and dead-letter queues known to exist, with when each was last declared.
#[derive(Debug, Default)]
pub(crate) struct Declared(Mutex<HashMap<String, Instant>>);

impl Declared {
    /// Whether `queue` was declared recently enough to be sent to without declaring it.
    fn has(&self, queue: &str) -> bool {
        self.0
            .lock()
            .get(queue)
            .is_some_and(|at| at.elapsed() < RENEW_EVERY)
    }

    pub(crate) fn add(&self, queue: &str) {
        self.0.lock().insert(queue.to_owned(), Instant::now());
    }

    fn forget(&self, queue: &str) {
        self.0.lock().remove(queue);
    }
}

/// A queue to send a message to, and how to declare it when it is missing.
pub(crate) struct Target<'a> {
    pub(crate) queue: &'a str,
    pub(crate) durable: bool,
    pub(crate) arguments: FieldTable,
    /// What the queue is, for errors (`retry queue`, `dead-letter queue`).
    pub(crate) what: &'static str,
}

/// The wait queue for a retry of a message of `queue` after `delay`. In front of a quorum
/// queue it is a quorum queue whose expired messages go back with at-least-once
/// dead-lettering (a retry cannot be lost on the way back); in front of a classic queue, a
/// classic queue (at-most-once: see README).
pub(crate) fn wait_queue(
    queue: &str,
    delay: Duration,
    queue_type: QueueType,
) -> (String, FieldTable) {
    let name = retry_queue_name(queue, delay);
    let ttl = delay.as_millis().min(i32::MAX as u128) as i64;
    let mut args = FieldTable::default();
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
    // Gone once unused for a minute after its last message expired (see `RENEW_EVERY`).
    args.insert(
        "x-expires".into(),
        AMQPValue::LongLongInt(ttl + LEASE_MARGIN_MS),
    );
    if queue_type == QueueType::Quorum {
        quorum_arguments(&mut args);
    }
    (name, args)
}

/// Makes a wait queue a quorum queue whose expired messages go on with at-least-once
/// dead-lettering (which needs `reject-publish`).
pub(crate) fn quorum_arguments(args: &mut FieldTable) {
    args.insert("x-queue-type".into(), long("quorum"));
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
}

/// The arguments of a dead-letter queue: of the consumed queue's type.
pub(crate) fn dead_letter_queue_arguments(queue_type: QueueType) -> FieldTable {
    let mut args = FieldTable::default();
    if queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), long("quorum"));
    }
    args
}

fn long(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// Sends `body` to `target` through the default exchange (mandatory, confirmed),
/// declaring the queue first if it is not known to exist. Weather (a nack, a lost
/// connection, the queue's node away) is tried again with backoff until `deadline`; a
/// refusal up to [`REFUSED_ATTEMPTS`] times (declaring the queue again in between). The
/// error returned says which it was ([`Error::is_retryable`]). A publish whose confirm had
/// not come by `deadline` is put in `doubt` (if given): the broker may still take it.
pub(crate) async fn send_to_queue(
    sender: Sender<'_>,
    target: Target<'_>,
    body: &[u8],
    properties: BasicProperties,
    deadline: Instant,
) -> Result<()> {
    let mut pause = FIRST_PAUSE;
    let mut refused = 0;
    loop {
        let sent = send_once(&sender, &target, body, &properties, deadline).await;
        let e = match sent {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if e.is_retryable() {
            if Instant::now() + pause >= deadline {
                return Err(e);
            }
        } else {
            refused += 1;
            if refused >= REFUSED_ATTEMPTS {
                return Err(e);
            }
            // The queue may be gone or declared otherwise meanwhile: declare it again.
            sender.declared.forget(target.queue);
        }
        tracing::warn!(queue = target.queue, error = %e, ?pause, "could not send to {}; trying again", target.what);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// What sends a retry or a dead letter: the connection, its publisher, the queues known
/// to exist, and where a publish left in doubt goes.
#[derive(Clone, Copy)]
pub(crate) struct Sender<'a> {
    pub(crate) connector: &'a Connector,
    pub(crate) publisher: &'a Publisher,
    pub(crate) declared: &'a Declared,
    pub(crate) doubt: Option<&'a DoubtSlot>,
}

async fn send_once(
    sender: &Sender<'_>,
    target: &Target<'_>,
    body: &[u8],
    properties: &BasicProperties,
    deadline: Instant,
) -> Result<()> {
    limits::check_name(target.what, target.queue)?;
    if !sender.declared.has(target.queue) {
        declare(sender.connector, target, deadline).await?;
        sender.declared.add(target.queue);
    }
    let msg = Outgoing {
        exchange: "",
        routing_key: target.queue,
        body,
        properties: properties.clone().into(),
        mandatory: true,
    };
    let sent = match sender.doubt {
        Some(doubt) => sender.publisher.publish_tracked(msg, deadline, doubt).await,
        None => sender.publisher.publish_until(msg, Some(deadline)).await,
    };
    if let Err(Error::Unroutable { .. }) = &sent {
        // The queue is gone (an unused wait queue expires): declare it next time.
        sender.declared.forget(target.queue);
    }
    sent
}

async fn declare(connector: &Connector, target: &Target<'_>, deadline: Instant) -> Result<()> {
    let what = format!("declaring {} `{}`", target.what, target.queue);
    let deadline = deadline.min(Instant::now() + DECLARE_TIMEOUT);
    let op = what.clone();
    let declaring = connector.with_channel(deadline, &what, |ch| async move {
        ch.queue_declare(
            target.queue.into(),
            QueueDeclareOptions {
                durable: target.durable,
                ..QueueDeclareOptions::default()
            },
            target.arguments.clone(),
        )
        .await
        .map(|_| ())
        .map_err(Error::amqp(op))
    });
    match tokio::time::timeout_at(deadline, declaring).await {
        Ok(declared) => declared,
        Err(_) => Err(Error::Unavailable(
            deadline.saturating_duration_since(Instant::now()),
            format!("declaring {} `{}`", target.what, target.queue),
        )),
    }
}
