//! The operator CLI against the real broker: dead letters listed, peeked at (left in
//! place), redriven (dry run, then for real, with a limit); publish seen by tail; call
//! answered; exit codes 1, 2, 3 and 5; help for every command; AsyncAPI documents compared
//! (versions, producer against consumer) and rendered, without a broker.

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

/// Declares `dlq`, and `queue` expiring every message at once into `dlq` (the broker's
/// own dead-lettering, with an `x-death` header).
async fn declare_expiring(ch: &Channel, queue: &str, dlq: &str) {
    ch.queue_declare(
        dlq.into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    let mut expiring = FieldTable::default();
    expiring.insert("x-message-ttl".into(), AMQPValue::LongUInt(0));
    expiring.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    expiring.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(dlq)),
    );
    ch.queue_declare(queue.into(), QueueDeclareOptions::default(), expiring)
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
    // 5: the broker refused the login (not "no broker"), without the password.
    let wrong = url().replacen("guest:guest@", "guest:wrong-pw@", 1);
    let o = Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args(["--url", &wrong, "publish", "x", "A", "{}"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("access refused") && !err.contains("wrong-pw"),
        "{err}"
    );
    // Malformed URLs (no `//`, a password holding `@` or `,`) never show the password.
    for malformed in [
        "amqp:guest:s3cret-pw@127.0.0.1:5672",
        "guest:s3cret-pw@127.0.0.1:5672",
        "amqp://guest:s3cret-pw@@127.0.0.1:1/%2f",
        "amqp://guest:s3cret,pw@127.0.0.1:1/%2f",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
            .args(["--url", malformed, "publish", "x", "A", "{}"])
            .output()
            .unwrap();
        assert_ne!(o.status.code(), Some(0), "{o:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!all.contains("s3cret"), "{malformed}: {all}");
    }

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
        &["contract", "--help"],
        &["contract", "diff", "--help"],
        &["contract", "check", "--help"],
        &["contract", "html", "--help"],
    ] {
        let o = cli(args);
        assert!(o.status.success(), "{args:?}: {o:?}");
        assert!(stdout(&o).contains("Usage:"), "{args:?}: {}", stdout(&o));
    }
}

/// The CLI with no broker address at all (the contract commands need none).
fn offline(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args(args)
        .env("AMQP_ADDR", "amqp://127.0.0.1:1/%2f")
        .output()
        .expect("the CLI runs")
}

/// A producer's document, as another team would hand it over (YAML): it sends
/// `T_CLI_ECHO` with `n` as an optional string.
const PRODUCER_YAML: &str = r##"
asyncapi: 3.0.0
info: {title: producer, version: "1"}
channels:
  out:
    address: cli
    messages: {echo: {$ref: "#/components/messages/echo"}}
operations:
  publish_echo:
    action: send
    channel: {$ref: "#/channels/out"}
    messages: [{$ref: "#/channels/out/messages/echo"}]
components:
  messages:
    echo:
      payload:
        type: object
        properties:
          action: {type: string, const: T_CLI_ECHO}
          data: {type: object, properties: {n: {type: string}}}
"##;

#[test]
fn contract_commands_name_breaking_changes_and_exit_1() {
    let dir = std::env::temp_dir().join(unique("eventrabbit-contract"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    // This program's consumer of T_CLI_ECHO (`n: u64`), and a next version of it that
    // also requires `reason`.
    let doc = eventrabbit::contract::AsyncApi::new("echo", "1")
        .consumes(ConsumeChannel::new("cli_echo").actions(["T_CLI_ECHO"]))
        .build()
        .unwrap();
    std::fs::write(path("v1.json"), doc.to_json()).unwrap();
    let mut next = doc.as_value().clone();
    let data = next
        .pointer_mut("/components/messages/T_CLI_ECHO.received/payload/properties/data")
        .unwrap();
    data["required"] = serde_json::json!(["n", "reason"]);
    data["properties"]["reason"] = serde_json::json!({"type": "string"});
    std::fs::write(path("v2.yaml"), serde_json::to_string(&next).unwrap()).unwrap();
    std::fs::write(path("producer.yaml"), PRODUCER_YAML).unwrap();

    let same = offline(&["contract", "diff", &path("v1.json"), &path("v1.json")]);
    assert_eq!(same.status.code(), Some(0), "{same:?}");
    assert!(
        stdout(&same).contains("no breaking change"),
        "{}",
        stdout(&same)
    );

    let changed = offline(&["contract", "diff", &path("v1.json"), &path("v2.yaml")]);
    assert_eq!(changed.status.code(), Some(1), "{changed:?}");
    assert!(
        stdout(&changed)
            .contains("BREAKING T_CLI_ECHO (received): field `data.reason` is new and required"),
        "{}",
        stdout(&changed)
    );
    // Backwards: dropping a requirement breaks no one.
    let relaxed = offline(&["contract", "diff", &path("v2.yaml"), &path("v1.json")]);
    assert_eq!(relaxed.status.code(), Some(0), "{relaxed:?}");

    let check = offline(&[
        "contract",
        "check",
        &path("producer.yaml"),
        &path("v1.json"),
    ]);
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    let out = stdout(&check);
    assert!(
        out.contains("field `data.n` is sent as string but read as integer"),
        "{out}"
    );
    assert!(
        out.contains(
            "the consumer requires field `data.n`, which the producer does not always send"
        ),
        "{out}"
    );

    let missing = offline(&["contract", "diff", &path("nowhere.json"), &path("v1.json")]);
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nowhere.json"),
        "{missing:?}"
    );

    let html = offline(&[
        "contract",
        "html",
        &path("v1.json"),
        "-o",
        &path("echo.html"),
    ]);
    assert!(html.status.success(), "{html:?}");
    let page = std::fs::read_to_string(path("echo.html")).unwrap();
    assert!(page.contains("T_CLI_ECHO") && page.starts_with("<!DOCTYPE html>"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `outbox list` shows a row the broker refused for good (its id, key and why), `outbox
/// retry` makes the relay send it again, and no database at the address is exit 4.
#[tokio::test]
async fn failed_outbox_rows_are_listed_and_retried() {
    use eventrabbit_postgres::{Outbox, OutboxMessage};
    let pool = eventrabbit_tests::pg_pool().await;
    let schema = eventrabbit_tests::pg_schema(&pool).await;
    let outbox = Outbox::new(&schema).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let id = outbox
        .publish(
            &mut tx,
            OutboxMessage::new(
                "x-cli-missing",
                "T_CLI_OUTBOX",
                &serde_json::json!({"n": 1}),
            )
            .unwrap()
            .ordering_key("order-7"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Marked failed as a relay does when the broker refuses a row for good.
    sqlx::query(&format!(
        "UPDATE {schema}.eventrabbit_outbox SET failed_at = now(), attempts = 1, \
         last_error = 'no exchange x-cli-missing' WHERE message_id = $1"
    ))
    .bind(&id)
    .execute(&pool)
    .await
    .unwrap();
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/eventrabbit_test".into());
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
            .args(["outbox", "--database-url", &db, "--schema", &schema])
            .args(args)
            .output()
            .expect("the CLI runs")
    };
    let listed = run(&["list"]);
    assert!(listed.status.success(), "{listed:?}");
    let text = stdout(&listed);
    assert!(
        text.contains("order-7")
            && text.contains("no exchange x-cli-missing")
            && text.contains(&id),
        "{text}"
    );
    assert!(
        !text.contains("(unix)") && regex_like_rfc3339(&text),
        "failed at, in RFC 3339: {text}"
    );
    let listed = Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args([
            "--json",
            "outbox",
            "--database-url",
            &db,
            "--schema",
            &schema,
            "list",
        ])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{listed:?}");
    let row: serde_json::Value =
        serde_json::from_str(stdout(&listed).lines().next().expect("a row")).unwrap();
    assert_eq!(row["message_id"], id.as_str(), "{row}");
    assert_eq!(row["ordering_key"], "order-7", "{row}");
    let retried = run(&["retry", "--all"]);
    assert!(retried.status.success(), "{retried:?}");
    assert!(
        stdout(&retried).contains("1 failed outbox row"),
        "{}",
        stdout(&retried)
    );
    assert!(outbox.failed(&pool, 10).await.unwrap().is_empty());
    let nothing = run(&["retry"]);
    assert_eq!(
        nothing.status.code(),
        Some(2),
        "naming no row is a usage error"
    );
    let no_db = Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args([
            "outbox",
            "--database-url",
            "postgres://postgres@127.0.0.1:1/none",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(no_db.status.code(), Some(4), "{no_db:?}");
    eventrabbit_tests::drop_schema(&pool, &schema).await;
}

/// `dlq redrive` without `--max` ends even when every message moved back bounces straight
/// into the dead-letter queue again (here: the queue expires each at once to its
/// dead-letter queue): it moves the dead letters that were there when it started, once.
/// (Before, it kept moving the same messages round in steps of 1,000 and never ended.)
#[tokio::test]
async fn a_redrive_of_bouncing_dead_letters_ends() {
    const N: u64 = 1_200;
    let queue = unique("q-cli-bounce");
    let dlq = format!("{queue}.dlq");
    let (_c, ch) = channel().await;
    declare_expiring(&ch, &queue, &dlq).await;
    for n in 0..N {
        dead_letter(&ch, &dlq, "invalid-data", "T_CLI_A", n).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue_len(&ch, &dlq).await < N as u32 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut redriving = tokio::process::Command::new(env!("CARGO_BIN_EXE_eventrabbit"))
        .args(["--url", &url(), "dlq", "redrive", &queue])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), redriving.wait())
        .await
        .expect("the redrive ends")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut redriving.stdout.take().unwrap(), &mut out)
        .await
        .unwrap();
    assert!(out.contains(&format!("moved {N} dead letter(s)")), "{out}");
    for q in [&queue, &dlq] {
        let _ = ch
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
}

/// `dlq peek` decodes the broker's `x-death` header (a table inside an array) into
/// readable text with RFC 3339 times, and `--json` gives scripts the same as JSON, as
/// `dlq list --json` does the counts. (Before, `x-death` printed as lapin's `Debug` output
/// with byte arrays, and times as epoch numbers.)
#[tokio::test]
async fn peek_decodes_x_death_and_json_is_for_scripts() {
    let queue = unique("q-cli-xdeath");
    let dlq = format!("{queue}.dlq");
    let (_c, ch) = channel().await;
    declare_expiring(&ch, &queue, &dlq).await;
    let body =
        serde_json::to_vec(&serde_json::json!({"action": "T_CLI_X", "data": {"n": 1}})).unwrap();
    ch.basic_publish(
        "".into(),
        queue.as_str().into(),
        BasicPublishOptions::default(),
        &body,
        BasicProperties::default(),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while queue_len(&ch, &dlq).await < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let o = cli(&["dlq", "peek", &queue, "1"]);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    let line = out
        .lines()
        .find(|l| l.starts_with("x-death: "))
        .unwrap_or_else(|| panic!("an x-death line: {out}"));
    assert!(line.contains(r#""reason":"expired""#), "{line}");
    assert!(line.contains(&format!(r#""queue":"{queue}""#)), "{line}");
    let time = regex_like_rfc3339(line);
    assert!(time, "an RFC 3339 time: {line}");
    assert!(
        !out.contains("LongString(") && !out.contains("ByteArray(") && !out.contains("FieldTable("),
        "{out}"
    );

    let o = cli(&["--json", "dlq", "peek", &queue, "1"]);
    assert!(o.status.success(), "{o:?}");
    let peeked: serde_json::Value =
        serde_json::from_str(stdout(&o).lines().next().expect("one line")).unwrap();
    assert_eq!(peeked["headers"]["x-death"][0]["reason"], "expired");
    assert_eq!(peeked["headers"]["x-death"][0]["count"], 1);
    assert_eq!(peeked["body"]["action"], "T_CLI_X");

    let o = cli(&["--json", "dlq", "list", &queue]);
    assert!(o.status.success(), "{o:?}");
    let listed: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(listed["count"], 1, "{listed}");
    assert_eq!(listed["groups"][0]["code"], "broker-expired", "{listed}");
    for q in [&queue, &dlq] {
        let _ = ch
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
}

/// Whether `text` holds a time written as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
fn regex_like_rfc3339(text: &str) -> bool {
    text.as_bytes().windows(24).any(|w| {
        let digits = |r: std::ops::Range<usize>| w[r].iter().all(u8::is_ascii_digit);
        digits(0..4)
            && w[4] == b'-'
            && digits(5..7)
            && w[7] == b'-'
            && digits(8..10)
            && w[10] == b'T'
            && digits(11..13)
            && w[13] == b':'
            && digits(14..16)
            && w[16] == b':'
            && digits(17..19)
            && w[19] == b'.'
            && digits(20..23)
            && w[23] == b'Z'
    })
}
