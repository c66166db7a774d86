//! Benchmarks eventrabbit against raw lapin doing the same work, in the same run, on the
//! local broker, and prints both figures and their ratio (median of the runs, min–max).
//!
//! ```sh
//! cargo run --release --example bench            # all workloads, 7 paired runs each
//! cargo run --release --example bench -- w1 9    # one workload, 9 runs (w1, w2, w2-traced, w3)
//! cargo run --release --example bench -- w1-eventrabbit-only   # W1 consumer alone, prints peak memory
//! cargo run --release --example bench -- w2-raw-only   # one side alone, for profiling: w{1,2}-{raw,eventrabbit}-only
//! ```

use eventrabbit::{
    Config, ConsumeChannel, ExchangeKind, TracePropagation, build_event_dependencies, consumer,
};
use futures_util::{FutureExt, StreamExt};
use lapin::options::*;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde::Deserialize;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const W1_N: u64 = 100_000;
const W2_N: u64 = 100_000;
const W3_SEQ: usize = 5_000;
const W3_WARMUP: usize = 200;
const W3_CONC: usize = 64;
const W3_CONC_N: usize = 20_000;

fn addr() -> String {
    std::env::var("AMQP_ADDR").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

async fn raw() -> (Connection, Channel) {
    let conn = Connection::connect(&addr(), ConnectionProperties::default())
        .await
        .expect("RabbitMQ must be running at AMQP_ADDR");
    let ch = conn.create_channel().await.unwrap();
    (conn, ch)
}

fn envelope(n: u64) -> Vec<u8> {
    serde_json::to_vec(
        &json!({"action": "USER_CREATED", "data": {"user_id": n, "name": format!("user-{n}")}}),
    )
    .unwrap()
}

fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

/// Whether the workloads run on quorum queues (W1q, W2q) rather than classic ones.
static QUORUM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn quorum() -> bool {
    QUORUM.load(Ordering::SeqCst)
}

async fn declare_queue(ch: &Channel, q: &str) {
    let mut args = FieldTable::default();
    if quorum() {
        // As eventrabbit declares a quorum queue, so that both sides use the same one.
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(format!("{q}.dlq").into()),
        );
    }
    ch.queue_declare(
        q.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
}

async fn delete_queue(ch: &Channel, q: &str) {
    let _ = ch
        .queue_delete(q.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .queue_delete(
            format!("{q}.dlq").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
}

/// Fills `q` with `n` W1 envelopes, confirmed.
async fn preload(q: &str, n: u64) {
    let (_c, ch) = raw().await;
    declare_queue(&ch, q).await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for i in 0..n {
        ch.basic_publish(
            "".into(),
            q.into(),
            BasicPublishOptions::default(),
            &envelope(i),
            persistent(),
        )
        .await
        .unwrap();
        if i % 5000 == 4999 {
            ch.wait_for_confirms().await.unwrap();
        }
    }
    ch.wait_for_confirms().await.unwrap();
}

// ---------- W1: consume ----------

static W1_COUNT: AtomicU64 = AtomicU64::new(0);
static W1_TARGET: AtomicU64 = AtomicU64::new(u64::MAX);
static W1_DONE: Notify = Notify::const_new();

#[consumer(action = "USER_CREATED")]
async fn on_user_created(user_id: i64, name: String) {
    std::hint::black_box((user_id, name));
    if W1_COUNT.fetch_add(1, Ordering::Relaxed) + 1 == W1_TARGET.load(Ordering::Relaxed) {
        W1_DONE.notify_one();
    }
}

async fn w1_eventrabbit(q: &str) -> f64 {
    W1_COUNT.store(0, Ordering::SeqCst);
    W1_TARGET.store(W1_N, Ordering::SeqCst);
    let done = W1_DONE.notified();
    let (_events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let h = handle.clone();
    let mut channel = ConsumeChannel::new(q).prefetch(100);
    if quorum() {
        channel = channel.quorum();
    }
    let start = Instant::now();
    let task = tokio::spawn(async move { h.consume(channel).await });
    done.await;
    let secs = start.elapsed().as_secs_f64();
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    W1_N as f64 / secs
}

#[derive(Deserialize)]
struct RawEnvelope {
    #[allow(dead_code)]
    action: String,
    data: RawUser,
}

#[derive(Deserialize)]
struct RawUser {
    user_id: i64,
    name: String,
}

/// Raw lapin the fast way: decode in the delivery loop, ack every 50 with `multiple`,
/// queued without awaiting the write.
async fn w1_raw(q: &str) -> f64 {
    // Timed from connecting, as eventrabbit's run is (it connects and declares in `consume`).
    let start = Instant::now();
    let (_c, ch) = raw().await;
    ch.basic_qos(100, BasicQosOptions::default()).await.unwrap();
    let mut consumer = ch
        .basic_consume(
            q.into(),
            "raw-w1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut n = 0u64;
    while let Some(Ok(d)) = consumer.next().await {
        let env: RawEnvelope = serde_json::from_slice(&d.data).unwrap();
        std::hint::black_box((env.data.user_id, env.data.name));
        n += 1;
        if n.is_multiple_of(50) || n == W1_N {
            // Queued without waiting for the write, as eventrabbit does: the fastest correct
            // form (an ack that fails with its channel is redelivered by the broker anyway).
            let ack = ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple: true });
            if let Some(Err(e)) = ack.now_or_never() {
                panic!("ack failed: {e}");
            }
        }
        if n == W1_N {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    ch.basic_cancel("raw-w1".into(), BasicCancelOptions::default())
        .await
        .unwrap();
    W1_N as f64 / secs
}

// ---------- W2: confirmed publish ----------

async fn w2_setup(x: &str, q: &str) {
    let (_c, ch) = raw().await;
    ch.exchange_declare(
        x.into(),
        lapin::ExchangeKind::Fanout,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    declare_queue(&ch, q).await;
    ch.queue_bind(
        q.into(),
        x.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
}

/// `traced`: every message carries a `traceparent` (eventrabbit: `TracePropagation::Always`).
async fn w2_eventrabbit(x: &str, traced: bool) -> f64 {
    let config = if traced {
        Config::default().with_trace_propagation(TracePropagation::Always)
    } else {
        Config::default()
    };
    let (events, _handle) = build_event_dependencies(addr(), config).await.unwrap();
    events
        .publish(
            x,
            "",
            "USER_CREATED",
            &json!({"user_id": 0, "name": "warm"}),
        )
        .await
        .unwrap();
    let start = Instant::now();
    futures_util::stream::iter(1..=W2_N)
        .map(|n| {
            let events = events.clone();
            async move {
                events
                    .publish(
                        x,
                        "",
                        "USER_CREATED",
                        &json!({"user_id": n, "name": format!("user-{n}")}),
                    )
                    .await
            }
        })
        .buffer_unordered(1000)
        .for_each(|r| async move { r.unwrap() })
        .await;
    W2_N as f64 / start.elapsed().as_secs_f64()
}

/// Raw lapin the fast way: up to 1000 publishes in flight, each confirm awaited
/// concurrently (pipelined, as eventrabbit's callers do above). `traced`: with a
/// `traceparent` header on every message.
async fn w2_raw(x: &str, traced: bool) -> f64 {
    let (_c, ch) = raw().await;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let start = Instant::now();
    futures_util::stream::iter(1..=W2_N)
        .map(|n| {
            let ch = ch.clone();
            async move {
                let body = envelope(n);
                let mut props =
                    persistent().with_message_id(uuid::Uuid::new_v4().to_string().into());
                if traced {
                    let mut h = FieldTable::default();
                    let tp = format!("00-{:032x}-{:016x}-01", fastrand::u128(1..), n);
                    h.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
                    props = props.with_headers(h);
                }
                let confirm = ch
                    .basic_publish(
                        x.into(),
                        "".into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                assert!(confirm.is_ack());
            }
        })
        .buffer_unordered(1000)
        .for_each(|_| async {})
        .await;
    W2_N as f64 / start.elapsed().as_secs_f64()
}

// ---------- W3: RPC ----------

#[consumer(action = "ECHO")]
async fn echo(n: u64) -> serde_json::Value {
    json!({ "n": n })
}

struct RpcResult {
    p50_us: f64,
    p99_us: f64,
    calls_per_sec: f64,
}

/// Warm-up, sequential latencies, then concurrent throughput, for either client.
async fn measure_rpc<F, Fut>(call: F) -> RpcResult
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for n in 0..W3_WARMUP as u64 {
        call(n).await;
    }
    let mut lat = Vec::with_capacity(W3_SEQ);
    for n in 0..W3_SEQ as u64 {
        let t = Instant::now();
        call(n).await;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let start = Instant::now();
    futures_util::stream::iter(0..W3_CONC_N as u64)
        .map(call)
        .buffer_unordered(W3_CONC)
        .for_each(|_| async {})
        .await;
    RpcResult {
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        calls_per_sec: W3_CONC_N as f64 / start.elapsed().as_secs_f64(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn w3_eventrabbit(q: &str) -> RpcResult {
    let (events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let h = handle.clone();
    let channel = ConsumeChannel::new(q).prefetch(100).actions(["ECHO"]);
    let task = tokio::spawn(async move { h.consume(channel).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let call = |n: u64| {
        let events = events.clone();
        async move {
            let r: serde_json::Value = events.call(q, "ECHO", json!({ "n": n })).await.unwrap();
            assert_eq!(r["n"], n);
        }
    };
    let result = measure_rpc(call).await;
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    result
}

/// Raw lapin RPC: a server echoing on `q`, a client with direct reply-to and a pending map.
async fn w3_raw(q: &str) -> RpcResult {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;
    // Server.
    let (server_conn, sch) = raw().await;
    declare_queue(&sch, q).await;
    sch.basic_qos(100, BasicQosOptions::default())
        .await
        .unwrap();
    let mut server = sch
        .basic_consume(
            q.into(),
            "raw-w3".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let pub_ch = server_conn.create_channel().await.unwrap();
    pub_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let server_task = tokio::spawn(async move {
        while let Some(Ok(d)) = server.next().await {
            let pub_ch = pub_ch.clone();
            let sch = sch.clone();
            tokio::spawn(async move {
                #[derive(Deserialize)]
                struct Req {
                    data: serde_json::Value,
                }
                let req: Req = serde_json::from_slice(&d.data).unwrap();
                let body = serde_json::to_vec(&json!({"data": {"n": req.data["n"]}})).unwrap();
                let props = BasicProperties::default()
                    .with_correlation_id(d.properties.correlation_id().clone().unwrap());
                let reply_to = d.properties.reply_to().clone().unwrap();
                pub_ch
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                // Queued without awaiting the write, as in W1.
                let ack = sch.basic_ack(d.delivery_tag, BasicAckOptions::default());
                if let Some(Err(e)) = ack.now_or_never() {
                    panic!("ack failed: {e}");
                }
            });
        }
    });
    // Client.
    let (_client_conn, cch) = raw().await;
    cch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let pending: Arc<Mutex<HashMap<String, oneshot::Sender<Vec<u8>>>>> = Arc::default();
    let mut replies = cch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let p = pending.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = replies.next().await {
            let id = d.properties.correlation_id().as_ref().unwrap().to_string();
            if let Some(tx) = p.lock().unwrap().remove(&id) {
                let _ = tx.send(d.data);
            }
        }
    });
    let call = |n: u64| {
        let cch = cch.clone();
        let pending = pending.clone();
        async move {
            let id = uuid::Uuid::new_v4().to_string();
            let (tx, rx) = oneshot::channel();
            pending.lock().unwrap().insert(id.clone(), tx);
            let body = serde_json::to_vec(&json!({"action": "ECHO", "data": {"n": n}})).unwrap();
            let props = persistent()
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(id.into());
            cch.basic_publish(
                "".into(),
                q.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &body,
                props,
            )
            .await
            .unwrap()
            .await
            .unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            assert_eq!(v["data"]["n"], n);
        }
    };
    let result = measure_rpc(call).await;
    server_task.abort();
    result
}

// ---------- reporting ----------

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// Prints the medians (min–max) of both, and the median (min–max) of the per-run ratios:
/// each run pairs an eventrabbit and a raw measurement taken back to back, so the ratio
/// is less exposed to the machine's drift than a ratio of medians.
fn row(name: &str, unit: &str, er: &[f64], raw: &[f64], higher_is_better: bool) {
    let (em, elo, ehi) = stats(er);
    let (rm, rlo, rhi) = stats(raw);
    let ratios: Vec<f64> = er.iter().zip(raw).map(|(e, r)| e / r).collect();
    let (ratio, rat_lo, rat_hi) = stats(&ratios);
    let better = if higher_is_better { "higher" } else { "lower" };
    println!(
        "| {name} | {em:.1} ({elo:.1}–{ehi:.1}) {unit} | {rm:.1} ({rlo:.1}–{rhi:.1}) {unit} | {ratio:.3} ({rat_lo:.3}–{rat_hi:.3}) | {better} is better |"
    );
}

/// One run's pair, on stderr (the table on stdout stays plain Markdown).
fn run_line(name: &str, i: usize, er: f64, raw: f64, unit: &str) {
    eprintln!(
        "  {name} run {}: eventrabbit {er:.1} {unit}, raw lapin {raw:.1} {unit}, ratio {:.3}",
        i + 1,
        er / raw
    );
}

/// Runs `a` then `b` on even runs and `b` then `a` on odd ones.
async fn paired<A, B, FA, FB, T>(i: usize, a: FA, b: FB) -> (T, T)
where
    FA: FnOnce() -> A,
    FB: FnOnce() -> B,
    A: std::future::Future<Output = T>,
    B: std::future::Future<Output = T>,
{
    if i.is_multiple_of(2) {
        let x = a().await;
        (x, b().await)
    } else {
        let y = b().await;
        (a().await, y)
    }
}

/// CPU time (user + system, all threads) this process has used, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the `(comm)`: state is field 3; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `fut` and returns its output with the CPU seconds the process spent meanwhile.
async fn with_cpu<T>(fut: impl std::future::Future<Output = T>) -> (T, f64) {
    let before = cpu_secs();
    let out = fut.await;
    (out, cpu_secs() - before)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(7);
    let tag = uuid::Uuid::new_v4().simple().to_string();

    if which == "w1-eventrabbit-only" || which == "w1-raw-only" {
        let q = format!("bench-w1-{tag}");
        preload(&q, W1_N).await;
        let before = peak_rss_kib();
        // Start the peak over, so it shows the consumer's own (Linux: "5" resets VmHWM).
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let (rate, cpu) = if which == "w1-raw-only" {
            with_cpu(w1_raw(&q)).await
        } else {
            with_cpu(w1_eventrabbit(&q)).await
        };
        let peak = peak_rss_kib().unwrap_or(0);
        let during = if reset {
            "while consuming"
        } else {
            "of the whole run (could not reset)"
        };
        println!(
            "{which}: {rate:.0} msgs/s, {:.1} µs CPU per message; peak RSS {during}: {peak} KiB (peak during the preload: {} KiB)",
            cpu / W1_N as f64 * 1e6,
            before.unwrap_or(0)
        );
        let (_c, ch) = raw().await;
        delete_queue(&ch, &q).await;
        return;
    }

    if which == "w2-eventrabbit-only" || which == "w2-raw-only" {
        let (x, q) = (format!("bench-w2-{tag}"), format!("bench-w2-{tag}"));
        w2_setup(&x, &q).await;
        let (rate, cpu) = if which == "w2-raw-only" {
            with_cpu(w2_raw(&x, false)).await
        } else {
            with_cpu(w2_eventrabbit(&x, false)).await
        };
        println!(
            "{which}: {rate:.0} msgs/s, {:.1} µs CPU per message",
            cpu / W2_N as f64 * 1e6
        );
        let (_c, ch) = raw().await;
        delete_queue(&ch, &q).await;
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        return;
    }

    println!("runs per workload: {runs} (alternating eventrabbit and raw lapin)\n");
    println!(
        "| workload | eventrabbit median (min–max) | raw lapin median (min–max) | eventrabbit / lapin, median of paired runs (min–max) | |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for (mode, on_quorum, label, name, cpu_name) in [
        (
            "w1",
            false,
            "W1",
            "W1 consume 100k",
            "W1 client CPU per message",
        ),
        (
            "w1q",
            true,
            "W1q",
            "W1q consume 100k from a quorum queue",
            "W1q client CPU per message",
        ),
    ] {
        let selected = which == mode || which == "all+quorum" || (which == "all" && !on_quorum);
        if !selected {
            continue;
        }
        QUORUM.store(on_quorum, Ordering::SeqCst);
        let (mut er, mut rw) = (Vec::new(), Vec::new());
        let (mut er_cpu, mut rw_cpu) = (Vec::new(), Vec::new());
        for i in 0..runs {
            // Both sides of a pair drain the same queue, loaded right before each of them
            // runs: the broker runs one queue markedly faster than another now and then
            // (its process placement), and sharing it keeps that out of the ratio.
            let q = format!("bench-w1-{tag}-{i}");
            let (e, r) = paired(
                i,
                || async {
                    preload(&q, W1_N).await;
                    with_cpu(w1_eventrabbit(&q)).await
                },
                || async {
                    preload(&q, W1_N).await;
                    with_cpu(w1_raw(&q)).await
                },
            )
            .await;
            run_line(label, i, e.0, r.0, "msg/s");
            er.push(e.0);
            rw.push(r.0);
            er_cpu.push(e.1 / W1_N as f64 * 1e6);
            rw_cpu.push(r.1 / W1_N as f64 * 1e6);
            let (_c, ch) = raw().await;
            delete_queue(&ch, &q).await;
        }
        row(name, "msg/s", &er, &rw, true);
        row(cpu_name, "µs", &er_cpu, &rw_cpu, false);
    }
    QUORUM.store(false, Ordering::SeqCst);
    for (mode, traced, on_quorum, label, name) in [
        ("w2", false, false, "W2", "W2 confirmed publish 100k"),
        (
            "w2-traced",
            true,
            false,
            "W2 traced",
            "W2 with a traceparent on every message",
        ),
        (
            "w2q",
            false,
            true,
            "W2q",
            "W2q confirmed publish 100k to a quorum queue",
        ),
    ] {
        let selected = which == mode || which == "all+quorum" || (which == "all" && !on_quorum);
        if !selected {
            continue;
        }
        QUORUM.store(on_quorum, Ordering::SeqCst);
        let (mut er, mut rw) = (Vec::new(), Vec::new());
        let (mut er_cpu, mut rw_cpu) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let (x, q) = (format!("bench-w2-{tag}-{i}"), format!("bench-w2-{tag}-{i}"));
            w2_setup(&x, &q).await;
            let (e, r) = paired(
                i,
                || with_cpu(w2_eventrabbit(&x, traced)),
                || with_cpu(w2_raw(&x, traced)),
            )
            .await;
            run_line(label, i, e.0, r.0, "msg/s");
            er.push(e.0);
            rw.push(r.0);
            er_cpu.push(e.1 / W2_N as f64 * 1e6);
            rw_cpu.push(r.1 / W2_N as f64 * 1e6);
            let (_c, ch) = raw().await;
            delete_queue(&ch, &q).await;
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        row(name, "msg/s", &er, &rw, true);
        row(
            &format!("{name}: client CPU per message"),
            "µs",
            &er_cpu,
            &rw_cpu,
            false,
        );
    }
    QUORUM.store(false, Ordering::SeqCst);
    if which == "all" || which == "all+quorum" || which == "w3" {
        let (mut p50e, mut p99e, mut cpse) = (Vec::new(), Vec::new(), Vec::new());
        let (mut p50r, mut p99r, mut cpsr) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let q = format!("bench-w3-{tag}-{i}");
            let q2 = format!("bench-w3-raw-{tag}-{i}");
            let (e, r) = paired(i, || w3_eventrabbit(&q), || w3_raw(&q2)).await;
            run_line("W3 p50", i, e.p50_us, r.p50_us, "µs");
            run_line(
                "W3 64 concurrent",
                i,
                e.calls_per_sec,
                r.calls_per_sec,
                "calls/s",
            );
            p50e.push(e.p50_us);
            p99e.push(e.p99_us);
            cpse.push(e.calls_per_sec);
            p50r.push(r.p50_us);
            p99r.push(r.p99_us);
            cpsr.push(r.calls_per_sec);
            let (_c, ch) = raw().await;
            delete_queue(&ch, &q).await;
            delete_queue(&ch, &q2).await;
        }
        row("W3 RPC sequential p50", "µs", &p50e, &p50r, false);
        row("W3 RPC sequential p99", "µs", &p99e, &p99r, false);
        row("W3 RPC 64 concurrent", "calls/s", &cpse, &cpsr, true);
    }
    let _ = ExchangeKind::Fanout;
}
