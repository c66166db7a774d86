//! Declaring what a consumed queue needs: exchange, queue, binding, dead-letter queue, QoS.

use super::retry::dead_letter_queue_arguments;
use crate::config::{Binding, ConsumeChannel, EventLog, Resolved};
use crate::error::{Error, Result};
use lapin::Channel;
use lapin::options::{
    BasicQosOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};

/// Declares everything `spec` consumes from on `ch`. Idempotent: run again after a reconnect.
pub(crate) async fn declare(
    ch: &Channel,
    spec: &ConsumeChannel,
    settings: &Resolved,
) -> Result<()> {
    let queue = spec.queue.as_str();
    ch.basic_qos(settings.prefetch, BasicQosOptions::default())
        .await
        .map_err(Error::amqp(format!("setting prefetch on queue `{queue}`")))?;
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: settings.durable,
            exclusive: spec.exclusive,
            auto_delete: spec.auto_delete,
            ..QueueDeclareOptions::default()
        },
        settings.arguments.clone(),
    )
    .await
    .map_err(Error::amqp(format!("declaring queue `{queue}`")))?;
    declare_dead_letter_queue(ch, settings).await?;
    bind(ch, spec, settings).await
}

/// Declares each exchange `spec` is bound to and binds the queue to it. Idempotent: run
/// again to re-assert bindings someone removed (an exchange deleted and re-created).
pub(crate) async fn bind(ch: &Channel, spec: &ConsumeChannel, settings: &Resolved) -> Result<()> {
    bind_all(
        ch,
        "queue",
        &spec.queue,
        &spec.bindings,
        settings.exchange_durable,
    )
    .await
}

/// Declares each exchange of `bindings` and binds `queue` (a `what`: queue or event log)
/// to it.
async fn bind_all(
    ch: &Channel,
    what: &str,
    queue: &str,
    bindings: &[Binding],
    exchange_durable: bool,
) -> Result<()> {
    for b in bindings {
        let exchange = b.exchange.as_str();
        declare_exchange(ch, b, exchange_durable).await?;
        ch.queue_bind(
            queue.into(),
            exchange.into(),
            b.key_for(queue).into(),
            QueueBindOptions::default(),
            b.arguments.clone(),
        )
        .await
        .map_err(Error::amqp(format!(
            "binding {what} `{queue}` to exchange `{exchange}`"
        )))?;
    }
    Ok(())
}

/// Declares the exchange of binding `b` (durable as it says, else `exchange_durable`).
async fn declare_exchange(ch: &Channel, b: &Binding, exchange_durable: bool) -> Result<()> {
    let exchange = b.exchange.as_str();
    ch.exchange_declare(
        exchange.into(),
        b.kind.to_lapin(),
        ExchangeDeclareOptions {
            durable: b.durable.unwrap_or(exchange_durable),
            ..ExchangeDeclareOptions::default()
        },
        b.exchange_arguments.clone(),
    )
    .await
    .map_err(Error::amqp(format!("declaring exchange `{exchange}`")))
}

/// Declares the dead-letter queue of a consumed queue (or stream consumer), of the
/// same type.
pub(crate) async fn declare_dead_letter_queue(ch: &Channel, settings: &Resolved) -> Result<()> {
    let name = settings.dead_letter_queue.as_str();
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: settings.durable,
            ..QueueDeclareOptions::default()
        },
        dead_letter_queue_arguments(settings.queue_type),
    )
    .await
    .map(|_| ())
    .map_err(Error::amqp(format!("declaring dead-letter queue `{name}`")))
}

/// Declares an event log (a stream with its retention) and binds it to its exchanges; a
/// partitioned one as its consistent-hash exchange, bound to the log's exchanges, and its
/// partition streams bound to that.
pub(crate) async fn declare_log(
    ch: &Channel,
    log: &EventLog,
    exchange_durable: bool,
) -> Result<()> {
    let Some(n) = log.partitions else {
        return declare_stream(ch, log, &log.name, &log.bindings, exchange_durable).await;
    };
    let name = log.name.as_str();
    let hash = Binding::consistent_hash(name);
    for index in 0..n {
        let partition = log.partition(index);
        declare_stream(ch, log, &partition, std::slice::from_ref(&hash), true).await?;
    }
    for b in &log.bindings {
        let source = b.exchange.as_str();
        declare_exchange(ch, b, exchange_durable).await?;
        ch.exchange_bind(
            name.into(),
            source.into(),
            b.key_for(name).into(),
            ExchangeBindOptions::default(),
            b.arguments.clone(),
        )
        .await
        .map_err(Error::amqp(format!(
            "binding the partitions of event log `{name}` to exchange `{source}`"
        )))?;
    }
    Ok(())
}

/// Declares one stream with the log's retention and binds it.
async fn declare_stream(
    ch: &Channel,
    log: &EventLog,
    name: &str,
    bindings: &[Binding],
    exchange_durable: bool,
) -> Result<()> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        log.arguments(),
    )
    .await
    .map_err(Error::amqp(format!("declaring event log `{name}`")))?;
    bind_all(ch, "event log", name, bindings, exchange_durable).await
}
