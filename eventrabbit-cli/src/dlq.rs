//! `eventrabbit dlq ...`: dead letters listed by reason, peeked at, moved back.

use crate::Failure;
use crate::headers;
use eventrabbit::{Handle, Redrive};
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

/// Dead letters moved per step of a redrive, between progress lines.
const STEP: usize = 1_000;

/// The most bytes of a body `peek` prints.
const BODY_SHOWN: usize = 512;

/// `dlq list`: the dead letters of `queue` by code and action.
pub(crate) async fn list(handle: &Handle, queue: &str, json: bool) -> Result<(), Failure> {
    let report = handle.redrive(queue, Redrive::new().dry_run(true)).await?;
    if json {
        let groups: Vec<_> = report
            .groups
            .iter()
            .map(|g| serde_json::json!({"count": g.count, "code": g.code, "action": g.action}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "dead_letter_queue": handle.dead_letter_queue(queue),
                "count": report.found,
                "groups": groups,
            })
        );
        return Ok(());
    }
    println!(
        "{}: {} dead letter(s)",
        handle.dead_letter_queue(queue),
        report.found
    );
    let mut groups = report.groups;
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(a.code.cmp(&b.code)));
    for g in groups {
        println!(
            "{:>8}  {:<22} {}",
            g.count,
            g.code,
            g.action.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// `dlq redrive`: moves dead letters back in steps, with a progress line per step, at most
/// as many as were waiting when it started (and at most `max`).
pub(crate) async fn redrive(
    handle: &Handle,
    queue: &str,
    max: Option<usize>,
    dry_run: bool,
) -> Result<(), Failure> {
    let max = max.unwrap_or(usize::MAX);
    if dry_run {
        let report = handle
            .redrive(queue, Redrive::new().max(max).dry_run(true))
            .await?;
        println!(
            "dry run: would move {} of {} dead letter(s) back to `{queue}`",
            report.examined, report.found
        );
        for g in report.groups {
            println!(
                "{:>8}  {:<22} {}",
                g.count,
                g.code,
                g.action.as_deref().unwrap_or("-")
            );
        }
        return Ok(());
    }
    // Bounded by what was waiting when it started: messages that bounce straight back
    // into the dead-letter queue are not moved round again and again.
    let mut bound = max;
    let mut moved = 0;
    let mut first = true;
    while moved < bound {
        let step = STEP.min(bound - moved);
        let report = handle.redrive(queue, Redrive::new().max(step)).await?;
        if first {
            bound = bound.min(report.found);
            first = false;
        }
        moved += report.moved;
        if let Some(error) = report.error {
            return Err(Failure::Failed(format!(
                "redrive of `{queue}` stopped after {moved} moved: {error}"
            )));
        }
        eprintln!(
            "moved {moved} so far ({} were waiting at this step)",
            report.found
        );
        if report.moved < step {
            break;
        }
    }
    println!("moved {moved} dead letter(s) back to `{queue}`");
    Ok(())
}

/// `dlq peek`: the first `n` dead letters of `dlq`, left in place (fetched unacknowledged,
/// then given back by closing the channel).
pub(crate) async fn peek(url: &str, dlq: &str, n: usize, json: bool) -> Result<(), Failure> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| Failure::NoBroker(e.to_string()))?;
    let ch = conn
        .create_channel()
        .await
        .map_err(|e| Failure::Failed(e.to_string()))?;
    ch.queue_declare(
        dlq.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| Failure::Failed(format!("dead-letter queue `{dlq}`: {e}")))?;
    let mut shown = 0;
    while shown < n {
        let got = ch
            .basic_get(dlq.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| Failure::Failed(e.to_string()))?;
        let Some(message) = got else { break };
        shown += 1;
        let d = &message.delivery;
        if json {
            println!("{}", peeked_json(shown, d));
            continue;
        }
        println!(
            "--- {shown} (message id {})",
            d.properties
                .message_id()
                .as_ref()
                .map_or("-", |s| s.as_str())
        );
        if let Some(headers) = d.properties.headers() {
            let mut keys: Vec<_> = headers.inner().iter().collect();
            keys.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            for (k, v) in keys {
                println!("{k}: {}", headers::to_text(k.as_str(), v));
            }
        }
        let body = String::from_utf8_lossy(&d.data);
        if body.len() > BODY_SHOWN {
            let cut = (0..=BODY_SHOWN)
                .rev()
                .find(|i| body.is_char_boundary(*i))
                .unwrap_or(0);
            println!("body: {}… ({} bytes)", &body[..cut], d.data.len());
        } else {
            println!("body: {body}");
        }
    }
    if shown == 0 && !json {
        println!("{dlq}: no dead letters");
    }
    // Closing gives back every message fetched unacknowledged, in its place.
    let _ = ch.close(200, "peeked".into()).await;
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// One dead letter as a JSON object: its place, message id, headers decoded, and body
/// (as JSON when it is JSON, else as text).
fn peeked_json(n: usize, d: &lapin::message::Delivery) -> serde_json::Value {
    let body = serde_json::from_slice::<serde_json::Value>(&d.data)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&d.data).into()));
    serde_json::json!({
        "n": n,
        "message_id": d.properties.message_id().as_ref().map(|s| s.as_str()),
        "headers": d.properties.headers().as_ref().map_or(serde_json::Value::Null, headers::table_json),
        "body": body,
    })
}
