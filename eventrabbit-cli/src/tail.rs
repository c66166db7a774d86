//! `eventrabbit tail`: what passes through an exchange, from a temporary queue of its own.

use crate::Failure;
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// Binds a temporary (exclusive, auto-deleted) queue to `exchange` with `key` and prints
/// each envelope as it passes, until Ctrl-C or `count` messages. The queue goes with the
/// connection; the messages it sees are copies, nobody else's.
pub(crate) async fn tail(
    url: &str,
    exchange: &str,
    key: &str,
    count: Option<usize>,
    json: bool,
) -> Result<(), Failure> {
    if exchange.is_empty() {
        return Err(Failure::Usage(
            "the default exchange cannot be tailed: name the exchange the queue is bound to".into(),
        ));
    }
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| Failure::NoBroker(e.to_string()))?;
    let failed = |e: lapin::Error| Failure::Failed(e.to_string());
    let ch = conn.create_channel().await.map_err(failed)?;
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    ch.queue_bind(
        queue.name().clone(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| Failure::Failed(format!("exchange `{exchange}`: {e}")))?;
    let mut consumer = ch
        .basic_consume(
            queue.name().clone(),
            "eventrabbit-tail".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    eprintln!("tailing exchange `{exchange}` (key `{key}`); Ctrl-C to stop");
    let mut seen = 0;
    loop {
        if count.is_some_and(|c| seen >= c) {
            break;
        }
        let next = tokio::select! {
            next = consumer.next() => next,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(delivery) = next else { break };
        let delivery = delivery.map_err(failed)?;
        seen += 1;
        if json {
            let body = serde_json::from_slice::<serde_json::Value>(&delivery.data)
                .unwrap_or_else(|_| String::from_utf8_lossy(&delivery.data).into());
            let props = &delivery.properties;
            println!(
                "{}",
                serde_json::json!({
                    "routing_key": delivery.routing_key.as_str(),
                    "message_id": props.message_id().as_ref().map(|s| s.as_str()),
                    "headers": props.headers().as_ref().map_or(serde_json::Value::Null, crate::headers::table_json),
                    "body": body,
                })
            );
            continue;
        }
        let body = String::from_utf8_lossy(&delivery.data);
        println!("{} {}", delivery.routing_key, body);
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
