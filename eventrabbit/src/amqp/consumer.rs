//! The consumer runner: one loop per queue, which declares its topology, consumes, and
//! starts over on a new channel (and connection) when it loses them.

use super::ack::Settlements;
use super::client::Client;
use super::delivery::{CONSUMER_TAG, QueueContext, Ready, deliver};
use super::topology;
use super::unsettled::Unsettled;
use crate::config::ConsumeChannel;
use crate::error::{Error, Result};
use crate::handler::middleware::Layers;
use crate::handler::registry;
use crate::pipeline::policy::QueuePolicy;
use crate::telemetry::health::{ConsumerSlot, ConsumerState, EndGuard};
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Runs `spec` until shutdown, reconnecting when the connection drops; `ready` is told
/// when it first consumes.
pub(crate) async fn run(
    shared: Arc<Client>,
    spec: ConsumeChannel,
    layers: Layers,
    ready: Option<Ready>,
) -> Result<()> {
    let stop = shared.shutdown.clone();
    run_until(shared, spec, layers, ready, stop).await
}

/// [`run`], until `stop` (or shutdown, which cancels it too) rather than only shutdown.
pub(crate) async fn run_until(
    shared: Arc<Client>,
    spec: ConsumeChannel,
    layers: Layers,
    ready: Option<Ready>,
    stop: CancellationToken,
) -> Result<()> {
    let _running = shared.consumer_started();
    let slot = shared.consumer_slot(&spec.queue);
    let _end = EndGuard(&slot);
    let result = match prepare(&shared, &spec, &slot, layers, ready, stop) {
        Ok(ctx) => consume(&shared, &spec, &ctx).await,
        Err(e) => Err(e),
    };
    match &result {
        Ok(()) => slot.set(ConsumerState::Stopped),
        Err(e) if spec.exclusive_consumer && e.is_exclusive_use() => {
            tracing::info!(queue = %spec.queue, error = %e, "another instance consumes this partition");
            slot.set(ConsumerState::Stopped);
        }
        Err(e) => {
            tracing::error!(queue = %spec.queue, error = %e, "consumer failed");
            slot.error(ConsumerState::Failed, e);
        }
    }
    result
}

/// What the consumer's deliveries share, once its set-up is known to be valid.
pub(super) fn prepare(
    shared: &Arc<Client>,
    spec: &ConsumeChannel,
    slot: &Arc<ConsumerSlot>,
    layers: Layers,
    ready: Option<Ready>,
    stop: CancellationToken,
) -> Result<Arc<QueueContext>> {
    let routes = registry::routes(&spec.queue, spec.handling.actions())?;
    let settings = spec.resolve(&shared.config.queue, &shared.config.retry);
    spec.check(&settings)?;
    let policy = QueuePolicy::new(&spec.queue, routes, settings, shared.config.state.clone())
        .with_layers(shared.layers.lock().around(&layers));
    policy.check()?;
    if spec.order_by.is_some() {
        policy.check_in_place_retries()?;
    }
    Ok(Arc::new(QueueContext {
        lanes: spec.order_by.is_some().then(Arc::default),
        spec: spec.clone(),
        policy,
        client: shared.clone(),
        slot: slot.clone(),
        unsettled: Unsettled::default(),
        ready: Mutex::new(ready),
        stop,
    }))
}

/// Sessions one after the other until shutdown or a fatal error; then waits for the
/// handlers still running.
async fn consume(
    shared: &Arc<Client>,
    spec: &ConsumeChannel,
    ctx: &Arc<QueueContext>,
) -> Result<()> {
    let slot = &ctx.slot;
    let tracker = slot.tracker.clone();
    let mut failures = 0u32;
    let result = loop {
        match session(ctx, spec, &tracker, slot).await {
            Ok(()) => break Ok(()),
            Err(_) if ctx.stop.is_cancelled() => break Ok(()),
            Err(e) if is_fatal(&e) => break Err(e),
            Err(e) => {
                // A session that got as far as consuming starts the backoff over.
                if matches!(slot.state(), ConsumerState::Running | ConsumerState::Stuck) {
                    failures = 0;
                }
                slot.error(ConsumerState::Recovering, &e);
                failures += 1;
                let delay = Duration::from_millis(100 * 2u64.pow(failures.min(7)))
                    .min(shared.config.max_reconnect_delay);
                tracing::warn!(queue = %spec.queue, error = %e, ?delay, "consumer interrupted, resuming");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.stop.cancelled() => break Ok(()),
                }
            }
        }
    };
    tracker.close();
    tokio::select! {
        () = tracker.wait() => {}
        () = shared.abort.cancelled() => {
            tracing::warn!(queue = %spec.queue, running = tracker.len(), "shutdown deadline passed; not waiting for the handlers still running");
        }
    }
    result
}

/// Errors that reconnecting cannot fix: the broker refused the topology, or the
/// consumer's own set-up is wrong.
fn is_fatal(e: &Error) -> bool {
    !e.is_transient()
}

/// One connection's worth of consuming: declare, consume, dispatch, until it drops or shutdown.
async fn session(
    ctx: &Arc<QueueContext>,
    spec: &ConsumeChannel,
    tracker: &TaskTracker,
    slot: &ConsumerSlot,
) -> Result<()> {
    let shared = &ctx.client;
    let step = Mutex::new(Step::Connecting);
    let setup = tokio::time::timeout(SETUP_TIMEOUT, open(ctx, spec, &step));
    let (ch, mut consumer) = tokio::select! {
        opened = setup => match opened {
            Ok(opened) => opened?,
            // Never hang on a broker reply that does not come: give up on this channel and retry.
            Err(_) => {
                let step = std::mem::replace(&mut *step.lock(), Step::Connecting);
                if let Step::Opening(conn) = &step {
                    // The broker does not even answer channel.open: that connection is
                    // broken. Only that one: another may have replaced it meanwhile.
                    shared.connector.abandon(conn);
                }
                return Err(Error::Unavailable(
                    SETUP_TIMEOUT,
                    format!("{} for queue `{}`", step.doing(), spec.queue),
                ));
            }
        },
        _ = ctx.stop.cancelled() => return Ok(()),
    };
    tracing::info!(queue = %spec.queue, prefetch = ctx.policy.settings.prefetch, "consuming");
    slot.running();
    if let Some(ready) = ctx.ready.lock().take() {
        let _ = ready.send(());
    }
    let mut acks = Settlements::new(ch.clone(), spec.queue.clone(), ctx.policy.settings.prefetch);
    let result = deliver(ctx, spec, tracker, &ch, &mut consumer, &mut acks).await;
    if result.is_ok() {
        // Shutdown: let in-flight handlers finish and their acks go out before closing.
        tracker.close();
        let finishing = async {
            acks.finish().await;
            tracker.wait().await;
        };
        tokio::select! {
            () = finishing => {}
            () = shared.abort.cancelled() => {}
        }
        tracker.reopen();
        let _ = ch.close(200, "shutdown".into()).await;
        tracing::info!(queue = %spec.queue, "consumer stopped");
    }
    // On a channel error the old tasks finish on their own (their acks are void: the
    // broker redelivers) while the next session starts at once.
    result
}

/// How far the set-up of a session got.
enum Step {
    Connecting,
    /// Opening a channel on this connection.
    Opening(Arc<lapin::Connection>),
    Declaring,
    Consuming,
}

impl Step {
    fn doing(&self) -> &'static str {
        match self {
            Step::Connecting => "connecting",
            Step::Opening(_) => "opening a channel",
            Step::Declaring => "declaring the topology",
            Step::Consuming => "starting to consume",
        }
    }
}

/// How long opening a channel, declaring the topology and starting to consume may take
/// before the attempt is abandoned and retried.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a channel, declares the topology and starts consuming; `step` says how far it got.
async fn open(
    ctx: &QueueContext,
    spec: &ConsumeChannel,
    step: &Mutex<Step>,
) -> Result<(lapin::Channel, lapin::Consumer)> {
    let set = |s: Step| *step.lock() = s;
    let what = format!("consuming queue `{}`", spec.queue);
    let conn = ctx.client.connector.connect(None, &what).await?;
    set(Step::Opening(conn.clone()));
    let ch = conn
        .create_channel()
        .await
        .map_err(Error::amqp(format!("opening a channel for {what}")))?;
    set(Step::Declaring);
    topology::declare(&ch, spec, &ctx.policy.settings).await?;
    ctx.client
        .declared
        .add(&ctx.policy.settings.dead_letter_queue);
    set(Step::Consuming);
    let consumer = ch
        .basic_consume(
            spec.queue.as_str().into(),
            CONSUMER_TAG.into(),
            BasicConsumeOptions {
                exclusive: spec.exclusive_consumer,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(Error::amqp(what))?;
    Ok((ch, consumer))
}
