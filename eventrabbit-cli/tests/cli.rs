//! The operator CLI against the real broker: dead letters listed, peeked at (left in
//! place), redriven (dry run, then for real, with a limit); publish seen by tail; call
//! answered; exit codes 1, 2 and 3; help for every command.

use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, consumer};
use lapin::options::{BasicPublishOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The broker, as the integration tests find it (a private node when none answers at
/// `AMQP_ADDR`).
fn url() -> String {
    eventrabbit_tests::amqp_addr()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args(args)
        .env("AMQP_ADDR", url())
        .output()
        .expect("the CLI runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn channel() -> (Connection, Channel) {
    let conn = Connection::connect(&url(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ at AMQP_ADDR");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

async fn queue_len(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
    .message_count()
}

async fn dead_letter(ch: &Channel, dlq: &str, code: &str, action: &str, n: u64) {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-dead-letter-code".into(),
        AMQPValue::LongString(LongString::from(code)),
    );
    headers.insert(
        "x-dead-letter-reason".into(),
        AMQPValue::LongString(LongString::from(format!("{code} for {n}"))),
    );
    let body =
        serde_json::to_vec(&serde_json::json!({"action": action, "data": {"n": n}})).unwrap();
    ch.basic_publish(
        "".into(),
        dlq.into(),
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default().with_headers(headers),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn dead_letters_are_listed_peeked_and_redriven() {
    let queue = unique("q-cli");
    let dlq = format!("{queue}.dlq");
    let (_c, ch) = channel().await;
    for q in [&queue, &dlq] {
        ch.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    }
    dead_letter(&ch, &dlq, "invalid-data", "T_CLI_A", 1).await;
    dead_letter(&ch, &dlq, "invalid-data", "T_CLI_A", 2).await;
    dead_letter(&ch, &dlq, "retries-exhausted", "T_CLI_B", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let o = cli(&["dlq", "list", &queue]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("3 dead letter(s)"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains('2') && l.contains("invalid-data") && l.contains("T_CLI_A")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains('1') && l.contains("retries-exhausted") && l.contains("T_CLI_B")),
        "{out}"
    );

    let o = cli(&["dlq", "peek", &queue, "2"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert!(out.contains("x-dead-letter-code: invalid-data"), "{out}");
    assert!(
        out.contains(r#"body: {"action":"T_CLI_A","data":{"n":1}}"#),
        "{out}"
    );
    assert!(!out.contains("T_CLI_B"), "only 2 shown: {out}");
    assert_eq!(queue_len(&ch, &dlq).await, 3, "peeking leaves them there");

    let o = cli(&["dlq", "redrive", &queue, "--dry-run"]);
    assert!(o.status.success(), "{o:?}");
    assert!(stdout(&o).contains("would move 3 of 3"), "{}", stdout(&o));
    assert_eq!(queue_len(&ch, &dlq).await, 3, "a dry run moves nothing");

    let o = cli(&["dlq", "redrive", &queue, "--max", "2"]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        stdout(&o).contains("moved 2 dead letter(s)"),
        "{}",
        stdout(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("moved 2 so far"),
        "progress on stderr: {o:?}"
    );
    assert_eq!(queue_len(&ch, &dlq).await, 1);
    assert_eq!(queue_len(&ch, &queue).await, 2);

    for q in [&queue, &dlq] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
}

#[tokio::test]
async fn what_is_published_is_seen_by_tail() {
    let exchange = unique("x-cli");
    let (_c, ch) = channel().await;
    ch.exchange_declare(
        exchange.as_str().into(),
        lapin::ExchangeKind::Topic,
        Default::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut tail = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args(["tail", &exchange, "--count", "1"])
        .env("AMQP_ADDR", url())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the tail's queue is bound: its line on stderr.
    let mut stderr = tail.stderr.take().unwrap();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&seen).contains("tailing") {
            let n = stderr.read(&mut buf).await.unwrap();
            assert!(n > 0, "tail ended early");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("tail starts");

    let o = tokio::task::spawn_blocking({
        let exchange = exchange.clone();
        move || {
            cli(&[
                "publish",
                &exchange,
                "T_CLI_EVENT",
                r#"{"n": 1}"#,
                "-k",
                "order.placed",
            ])
        }
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{o:?}");
    let out = tokio::time::timeout(Duration::from_secs(20), tail.wait_with_output())
        .await
        .expect("tail stops after 1")
        .unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains(r#"order.placed {"action":"T_CLI_EVENT","data":{"n":1}}"#),
        "{text}"
    );
    let _ = ch
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
}

#[consumer(action = "T_CLI_ECHO")]
async fn echo(n: u64) -> serde_json::Value {
    serde_json::json!({ "n": n })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_prints_the_reply_and_exit_codes_say_what_failed() {
    let queue = unique("q-cli-rpc");
    let (_events, handle) = build_event_dependencies(&url(), Config::default())
        .await
        .unwrap();
    let task = {
        let handle = handle.clone();
        let channel = ConsumeChannel::new(&queue).actions(["T_CLI_ECHO"]);
        tokio::spawn(async move { handle.consume(channel).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = tokio::task::spawn_blocking({
        let queue = queue.clone();
        move || cli(&["call", &queue, "T_CLI_ECHO", r#"{"n": 5}"#])
    })
    .await
    .unwrap();
    assert!(o.status.success(), "{o:?}");
    let reply: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(reply, serde_json::json!({"n": 5}));

    // 1: the operation failed (no queue takes the call).
    let o = cli(&[
        "call",
        &unique("q-cli-nobody"),
        "T_CLI_ECHO",
        "{}",
        "--timeout",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).starts_with("error: "),
        "{o:?}"
    );
    // 2: bad input.
    let o = cli(&["publish", "x", "A", "[1, 2]"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a JSON object"),
        "{o:?}"
    );
    let o = cli(&["dlq", "frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // 3: no broker.
    let o = Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args([
            "--url",
            "amqp://guest:guest@127.0.0.1:1/%2f",
            "publish",
            "x",
            "A",
            "{}",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no broker"),
        "{o:?}"
    );

    handle.shutdown().await;
    let _ = task.await;
    let (_c, ch) = channel().await;
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["dlq", "--help"],
        &["dlq", "list", "--help"],
        &["dlq", "peek", "--help"],
        &["dlq", "redrive", "--help"],
        &["publish", "--help"],
        &["tail", "--help"],
        &["call", "--help"],
    ] {
        let o = cli(args);
        assert!(o.status.success(), "{args:?}: {o:?}");
        assert!(stdout(&o).contains("Usage:"), "{args:?}: {}", stdout(&o));
    }
}
