//! Shared helpers for eventrabbit's integration tests. They talk to a real RabbitMQ: the
//! one at `AMQP_ADDR`, or, when none answers there and `rabbitmq-server` is installed, a
//! private node they start themselves (`scripts/broker`); otherwise they fail loudly,
//! saying how to start one.

use eventrabbit::{Config, ConsumeChannel, Events, Handle, build_event_dependencies};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

pub mod bank;
pub mod cluster;
mod proxy;
pub mod raw_stream;
pub use proxy::Proxy;

/// The broker URL: `AMQP_ADDR` (or the local default) when a broker answers there; else a
/// private node started from the machine's `rabbitmq-server` (`scripts/broker`), once for
/// all tests; else `AMQP_ADDR` as it is, and the first connection fails saying how to
/// start a broker.
pub fn amqp_addr() -> String {
    static ADDR: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ADDR.get_or_init(resolve_broker).clone()
}

fn resolve_broker() -> String {
    let configured = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    if answers(&configured) {
        return configured;
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/broker");
    let private = "amqp://guest:guest@127.0.0.1:5699/%2f".to_owned();
    if answers(&private) {
        eprintln!("no broker answers at {configured}: using the private node at {private}");
        return private;
    }
    let installed = std::process::Command::new("sh")
        .args(["-c", "command -v rabbitmq-server"])
        .output()
        .is_ok_and(|o| o.status.success());
    if installed {
        eprintln!(
            "no broker answers at {configured}: starting a private node (scripts/broker start)"
        );
        let started = std::process::Command::new(&script)
            .arg("start")
            .status()
            .is_ok_and(|s| s.success());
        if started && answers(&private) {
            return private;
        }
        eprintln!("the private node did not start; see /tmp/eventrabbit-private/log");
    }
    configured
}

/// Whether something accepts TCP connections where `url` points, within a second.
fn answers(url: &str) -> bool {
    let Ok(uri) = url.parse::<lapin::uri::AMQPUri>() else {
        return false;
    };
    let address = (uri.authority.host.as_str(), uri.authority.port);
    std::net::ToSocketAddrs::to_socket_addrs(&address)
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// Polls `$cond` (any expression, `.await` allowed) every 20 ms until it holds or
/// `$timeout` passes. The caller asserts afterwards, so a timeout fails with its message.
#[macro_export]
macro_rules! wait_until {
    ($timeout:expr, $cond:expr) => {{
        let deadline = ::tokio::time::Instant::now() + $timeout;
        while !($cond) && ::tokio::time::Instant::now() < deadline {
            ::tokio::time::sleep(::std::time::Duration::from_millis(20)).await;
        }
    }};
}

/// A raw lapin connection for arranging and inspecting tests; panics loudly if the broker is down.
pub async fn raw_connection() -> Connection {
    match Connection::connect(&amqp_addr(), ConnectionProperties::default()).await {
        Ok(c) => c,
        Err(e) => panic!(
            "RabbitMQ is not reachable at AMQP_ADDR ({e}). These tests need a real broker: \
             run `rabbitmq-server -detached && rabbitmqctl await_startup`, or `docker compose up -d` \
             (the tests start a private node themselves where `rabbitmq-server` is installed)."
        ),
    }
}

/// A confirm-mode channel on a fresh raw connection (kept alive by the returned pair).
pub async fn raw_channel() -> (Connection, Channel) {
    let conn = raw_connection().await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm");
    (conn, ch)
}

/// Declares `queue` (durable or not) as someone else would, outside eventrabbit.
pub async fn declare_queue(ch: &Channel, queue: &str, durable: bool) {
    let opts = QueueDeclareOptions {
        durable,
        ..Default::default()
    };
    ch.queue_declare(queue.into(), opts, FieldTable::default())
        .await
        .expect("queue_declare");
}

/// Declares `queue` (not durable) holding at most `max_length` messages and refusing
/// (nacking) publishes beyond that (`reject-publish`), as someone else would.
pub async fn declare_refusing_queue(ch: &Channel, queue: &str, max_length: i64) {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(max_length));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    ch.queue_declare(queue.into(), QueueDeclareOptions::default(), args)
        .await
        .expect("queue_declare");
}

/// Declares a durable exchange and binds `queue` (declared here, not durable) to it with `key`.
pub async fn bind_queue(
    ch: &Channel,
    queue: &str,
    exchange: &str,
    kind: lapin::ExchangeKind,
    key: &str,
) {
    let opts = lapin::options::ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(exchange.into(), kind, opts, FieldTable::default())
        .await
        .expect("exchange_declare");
    declare_queue(ch, queue, false).await;
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        Default::default(),
        FieldTable::default(),
    )
    .await
    .expect("queue_bind");
}

/// Publishes every body to `queue` through the default exchange, then waits for all confirms.
pub async fn publish_all(ch: &Channel, queue: &str, bodies: impl IntoIterator<Item = Vec<u8>>) {
    for body in bodies {
        ch.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        )
        .await
        .expect("publish");
    }
    let returned = ch.wait_for_confirms().await.expect("confirms");
    assert!(returned.is_empty(), "nothing returned");
}

/// `prefix-<uuid>`: names no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Logs to the test output when `EVENTRABBIT_TEST_LOG` holds a filter
/// (`EVENTRABBIT_TEST_LOG=eventrabbit=debug cargo test ...`); quiet otherwise.
pub fn init_test_log() {
    if let Ok(filter) = std::env::var("EVENTRABBIT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// `build_event_dependencies` on the test broker.
pub async fn deps(config: Config) -> (Events, Handle) {
    deps_at(&amqp_addr(), config).await
}

/// `build_event_dependencies` on the broker at `url` (a proxy in front of the test broker).
pub async fn deps_at(url: &str, config: Config) -> (Events, Handle) {
    init_test_log();
    let _ = raw_connection().await; // loud failure if the broker is down
    build_event_dependencies(url, config)
        .await
        .expect("build_event_dependencies")
}

/// Starts consuming `channel` in the background and returns once the broker shows the consumer.
pub async fn start(
    handle: &Handle,
    channel: ConsumeChannel,
) -> tokio::task::JoinHandle<eventrabbit::Result<()>> {
    let queue = channel.queue().to_owned();
    let h = handle.clone();
    let task = tokio::spawn(async move { h.consume(channel).await });
    let running = || async {
        handle
            .health()
            .await
            .consumers
            .iter()
            .any(|c| c.queue == queue && c.state == eventrabbit::ConsumerState::Running)
    };
    wait_until!(
        Duration::from_secs(30),
        running().await || task.is_finished()
    );
    if task.is_finished() {
        panic!("consuming `{queue}` ended at once: {:?}", task.await);
    }
    if !running().await {
        panic!(
            "no consumer on queue `{queue}` within 30s: {:?}",
            handle.health().await
        );
    }
    task
}

/// Waits until `queue` exists and has a consumer.
pub async fn wait_for_consumer(queue: &str) {
    let conn = raw_connection().await;
    for _ in 0..200 {
        let ch = conn.create_channel().await.expect("channel");
        if let Ok(q) = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            && q.consumer_count() > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no consumer appeared on queue `{queue}` within 10s");
}

/// Publishes `body` as is (confirmed).
pub async fn publish_raw(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    props: BasicProperties,
) {
    let confirm = ch
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "broker refused raw publish");
}

/// Publishes an envelope as is (confirmed).
pub async fn publish_envelope(
    ch: &Channel,
    exchange: &str,
    key: &str,
    action: &str,
    data: serde_json::Value,
) {
    let body = serde_json::to_vec(&serde_json::json!({"action": action, "data": data})).unwrap();
    publish_raw(ch, exchange, key, &body, BasicProperties::default()).await;
}

/// Gets the next message of `queue`, waiting up to `timeout`.
pub async fn get_message(
    ch: &Channel,
    queue: &str,
    timeout: Duration,
) -> Option<lapin::message::BasicGetMessage> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic_get")
        {
            return Some(m);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many messages sit in `queue`.
pub async fn queue_len(ch: &Channel, queue: &str) -> u32 {
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map(|q| q.message_count())
    .unwrap_or(0)
}

/// Runs `rabbitmqctl` with `args`; panics with its output if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A policy (`max-length 0`, `overflow = reject-publish`) making the broker nack every
/// publish to the queues matching `pattern`, for as long as it lives: weather made on
/// purpose, on a test's own queues only.
#[derive(Debug)]
pub struct Refusing(String);

impl Refusing {
    /// Refuses publishes to the queues whose names match the regular expression `pattern`.
    pub fn queues(pattern: &str) -> Self {
        let name = unique("refuse");
        rabbitmqctl(&[
            "set_policy",
            "--apply-to",
            "queues",
            "--priority",
            "100",
            &name,
            pattern,
            r#"{"max-length":0,"overflow":"reject-publish"}"#,
        ]);
        Self(name)
    }

    /// Lifts the policy: the queues take publishes again.
    pub fn lift(self) {}
}

impl Drop for Refusing {
    fn drop(&mut self) {
        rabbitmqctl(&["clear_policy", &self.0]);
    }
}

/// `queue` as a regular expression matching only that name.
pub fn exactly(queue: &str) -> String {
    format!("^{}$", queue.replace('.', "\\."))
}

/// How many messages of `queue` are delivered and not yet acknowledged, as `rabbitmqctl`
/// reports it (panics if `rabbitmqctl` cannot tell).
pub fn unacked(queue: &str) -> u64 {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "list_queues",
            "-q",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl list_queues failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|line| {
            let (name, n) = line.split_once('\t')?;
            (name.trim() == queue).then(|| n.trim().parse().expect("a count"))
        })
        .unwrap_or_else(|| panic!("queue `{queue}` is not listed by rabbitmqctl"))
}

/// A header of a message as text.
pub fn header(props: &BasicProperties, key: &str) -> Option<String> {
    let v = props.headers().as_ref()?.inner().get(key)?;
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        other => format!("{other:?}"),
    })
}

/// Deletes the queues (with their `.dlq`) and exchanges a test made.
pub async fn cleanup(queues: &[&str], exchanges: &[&str]) {
    let conn = raw_connection().await;
    let ch = conn.create_channel().await.expect("channel");
    for q in queues {
        for name in [q.to_string(), format!("{q}.dlq")] {
            let _ = ch
                .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for x in exchanges {
        let _ = ch
            .exchange_delete((*x).into(), ExchangeDeleteOptions::default())
            .await;
    }
}

/// Collects values from handlers, for tests to wait on.
#[derive(Debug)]
pub struct Recorder {
    values: Mutex<Vec<serde_json::Value>>,
    notify: Notify,
}

impl Recorder {
    /// An empty recorder, usable in a `static`.
    pub const fn new() -> Self {
        Self {
            values: Mutex::new(Vec::new()),
            notify: Notify::const_new(),
        }
    }

    /// Records one value.
    pub fn record(&self, value: serde_json::Value) {
        self.values.lock().unwrap().push(value);
        self.notify.notify_waiters();
    }

    /// What has been recorded so far.
    pub fn values(&self) -> Vec<serde_json::Value> {
        self.values.lock().unwrap().clone()
    }

    /// Waits until at least `n` values are recorded (panics after `timeout`), returns them all.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            let values = self.values();
            if values.len() >= n {
                return values;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let values = self.values();
                if values.len() >= n {
                    return values;
                }
                panic!(
                    "expected {n} recorded values within {timeout:?}, got {}: {values:?}",
                    values.len()
                );
            }
        }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// Poison bodies for a queue whose handler of `good` takes `user_id: i64, name: String`,
/// with the reason code each must be dead-lettered with (bodies over 4096 bytes count as
/// too large). Shared by the real-broker and the test-broker tests so the two agree.
pub fn poison_cases(good: &str) -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (b"not json at all".to_vec(), "not-json"),
        (vec![0xff, 0xfe, 0x00], "not-utf8"),
        {
            // Invalid UTF-8 in a key serde_json would skip: still not UTF-8.
            let mut body =
                format!(r#"{{"action":"{good}","data":{{"user_id":1,"name":"a"}},"x":""#)
                    .into_bytes();
            body.extend_from_slice(b"\xff\"}");
            (body, "not-utf8")
        },
        (b"[1,2,3]".to_vec(), "not-object"),
        (
            br#"{"data":{"user_id":1,"name":"a"}}"#.to_vec(),
            "missing-action",
        ),
        (
            format!(r#"{{"action":"{good}","data":[1]}}"#).into_bytes(),
            "data-not-object",
        ),
        (
            format!(r#"{{"action":"{good}","data":{{"user_id":"seven","name":"a"}}}}"#)
                .into_bytes(),
            "invalid-data",
        ),
        (
            format!(r#"{{"action":"{good}","data":{{"user_id":1}}}}"#).into_bytes(),
            "invalid-data",
        ),
        (
            br#"{"action":"T_NOBODY","data":{}}"#.to_vec(),
            "unknown-action",
        ),
        (
            format!(
                r#"{{"action":"{good}","data":{{"user_id":1,"name":"{}"}}}}"#,
                "x".repeat(5000)
            )
            .into_bytes(),
            "too-large",
        ),
        (
            format!(r#"{{"action":"{good}","data":{{"user_id":1,"name":"a"}},"action":"B"}}"#)
                .into_bytes(),
            "duplicate-key",
        ),
    ]
}

/// One binding and one publish, and whether RabbitMQ routes the message to the queue.
#[derive(Debug, Clone)]
pub struct RoutingCase {
    /// The exchange kind.
    pub kind: eventrabbit::ExchangeKind,
    /// The binding's routing key (pattern for topic).
    pub binding_key: &'static str,
    /// Headers the binding matches (headers exchanges).
    pub binding_headers: &'static [(&'static str, &'static str)],
    /// `x-match: any` instead of all.
    pub match_any: bool,
    /// The routing key published with.
    pub key: &'static str,
    /// The headers published with.
    pub headers: &'static [(&'static str, &'static str)],
    /// Whether the queue gets the message.
    pub routed: bool,
}

/// The routing cases both brokers must agree on.
pub fn routing_cases() -> Vec<RoutingCase> {
    use eventrabbit::ExchangeKind::*;
    let case = |kind, binding_key, key, routed| RoutingCase {
        kind,
        binding_key,
        binding_headers: &[],
        match_any: false,
        key,
        headers: &[],
        routed,
    };
    let headers = |binding_headers, match_any, headers, routed| RoutingCase {
        kind: Headers,
        binding_key: "",
        binding_headers,
        match_any,
        key: "",
        headers,
        routed,
    };
    vec![
        case(Fanout, "", "anything", true),
        case(Direct, "red", "red", true),
        case(Direct, "red", "blue", false),
        case(Topic, "user.*.created", "user.eu.created", true),
        case(Topic, "user.*.created", "user.eu.deleted", false),
        case(Topic, "user.*.created", "user.eu.x.created", false),
        case(Topic, "user.#", "user.eu.x.created", true),
        case(Topic, "#.created", "created", true),
        headers(
            &[("kind", "a"), ("region", "eu")],
            false,
            &[("kind", "a"), ("region", "eu")],
            true,
        ),
        headers(
            &[("kind", "a"), ("region", "eu")],
            false,
            &[("kind", "a"), ("region", "us")],
            false,
        ),
        headers(
            &[("kind", "a"), ("region", "eu")],
            true,
            &[("kind", "a"), ("region", "us")],
            true,
        ),
        headers(
            &[("kind", "a"), ("region", "eu")],
            true,
            &[("kind", "b")],
            false,
        ),
    ]
}

impl RoutingCase {
    /// The `ConsumeChannel` binding `queue` to `exchange` as this case says.
    pub fn channel(&self, queue: &str, exchange: &str) -> eventrabbit::ConsumeChannel {
        let mut b = eventrabbit::Binding::new(exchange, self.kind).routing_key(self.binding_key);
        for (k, v) in self.binding_headers {
            b = b.header(*k, *v);
        }
        if self.match_any {
            b = b.match_any();
        }
        eventrabbit::ConsumeChannel::new(queue).bind(b)
    }

    /// The headers to publish with.
    pub fn header_table(&self) -> lapin::types::FieldTable {
        let mut t = lapin::types::FieldTable::default();
        for (k, v) in self.headers {
            t.insert(
                (*k).into(),
                lapin::types::AMQPValue::LongString((*v).into()),
            );
        }
        t
    }
}

/// The test database: `DATABASE_URL`, or `eventrabbit_test` on the local PostgreSQL,
/// created if missing. Fails loudly, saying how to start PostgreSQL, when unreachable.
pub async fn pg_pool() -> sqlx::PgPool {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/eventrabbit_test".into());
    if let Ok(pool) = sqlx::PgPool::connect(&url).await {
        return pool;
    }
    // The server is there but not the database: create it.
    let (base, name) = url
        .rsplit_once('/')
        .expect("a database URL with a database name");
    let admin = match sqlx::PgPool::connect(&format!("{base}/postgres")).await {
        Ok(admin) => admin,
        Err(e) => panic!(
            "PostgreSQL is not reachable at {url} ({e}). These tests need a real database: \
             start PostgreSQL (e.g. `pg_ctlcluster $(ls /etc/postgresql) main start`, or \
             `docker compose --profile postgres up -d`), or set DATABASE_URL."
        ),
    };
    let _ = sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await;
    sqlx::PgPool::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

/// A fresh schema with the outbox and inbox tables, for one test.
pub async fn pg_schema(pool: &sqlx::PgPool) -> String {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    eventrabbit_postgres::migrate(pool, &schema)
        .await
        .expect("migrate");
    schema
}

/// Drops a test's schema.
pub async fn drop_schema(pool: &sqlx::PgPool, schema: &str) {
    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .execute(pool)
        .await;
}
