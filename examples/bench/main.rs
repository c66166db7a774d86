//! Benchmarks eventrabbit against the raw clients doing the same work (lapin; the
//! raw stream-protocol reader for W4), in the same run, on the local broker, and prints both
//! figures and their ratio (median of the runs, min–max).
//!
//! ```sh
//! cargo run --release --example bench            # all workloads, 7 paired runs each
//! cargo run --release --example bench -- w1 9    # one workload, 9 runs (w1, w2, w2-traced, w3, w4; w1q, w2q)
//! cargo run --release --example bench -- all+quorum   # all, and W1/W2 on quorum queues
//! cargo run --release --example bench -- w1-eventrabbit-only   # W1 consumer alone, prints peak memory
//! cargo run --release --example bench -- w2-raw-only   # one side alone, for profiling: w{1,2,4}-{raw,eventrabbit}-only
//! cargo run --release --example bench --features peer-ruststream -- w2-peer 6   # W2 with RustStream 0.7 as a third side
//!     (with BENCH_THREADS=1, W2's also prints its future's size and each thread's CPU and context switches)
//! cargo run --release --example bench -- w5-raw-only   # W5 one side alone, for profiling (w5-eventrabbit-only likewise)
//! cargo run --release --example bench -- w3-split 7   # each RPC client against each server (W3_SPLIT_ONLY=k: one pairing)
//! cargo run --release --example bench -- w3-transient 5   # raw lapin alone: requests' delivery mode and confirm mode
//!     (W3_DROP_CONFIRM=1: its confirm-mode client drops each confirm unpolled, so that no one is woken for it)
//! cargo run --release --example bench -- w5 3     # 200 queues on one connection, and idle RSS with 200 consumers
//! cargo run --release --example bench -- w6 3     # latency under an open-loop load (30 s per side and run)
//! cargo run --release --example bench -- alloc    # allocations per message, W1 and W2, both sides
//! cargo run --release --example bench -- outbox 5 # the outbox relay draining 20,000 events (four key
//!     distributions) vs direct confirmed publish, and commit-to-delivery latency (DATABASE_URL)
//! cargo run --release --example bench -- lanes 5  # keyed order: 8 keys in lanes, and prefetch(1), vs raw
//!     lapin's prefetch(1), with a 1 ms handler
//! cargo run --release --example bench -- superstream 5  # replaying 200,000 events from one stream and
//!     from 4 partitions, vs the raw stream reader (one connection per stream)
//! cargo run --release --example bench -- inbox 3  # the inbox per message vs the same transaction without
//!     it, and a batch handler claiming its batch at once vs per message (DATABASE_URL)
//! cargo run --release --example bench -- es 5     # event sourcing: appends on 1 and 1,000 streams vs a
//!     hand-written transaction, loading 10,000 events with and without a snapshot, command to projection
//! ```
//!
//! Every run writes a chart of its rows' paired ratios to `docs/bench/ratios-<workload>.svg`
//! (W6 also `docs/bench/w6-latency.svg`); `BENCH_CHARTS=dir` writes them elsewhere.
//!
//! One module per workload; `broker` holds what both sides share, `measure` the pairing,
//! statistics and resource readings.

mod alloc;
mod broker;
mod charts;
mod es;
mod inbox;
mod lanes;
mod measure;
mod outbox;
#[cfg(feature = "peer-ruststream")]
mod peer;
/// The raw stream-protocol client the stream rows compare with (shared with the tests).
#[path = "../../tests/src/raw_stream.rs"]
#[allow(dead_code)] // its publisher serves the tests
mod raw_stream;
mod superstream;
mod w1;
mod w2;
mod w3;
mod w4;
mod w5;
mod w6;

use broker::{delete_queue, preload, raw, set_quorum};
use lapin::options::ExchangeDeleteOptions;
use measure::{paired, peak_rss_kib, row, run_line, with_cpu};
use w1::{W1_N, w1_eventrabbit, w1_raw};
use w2::{W2_N, w2_eventrabbit, w2_raw, w2_setup};
use w3::{w3_eventrabbit, w3_raw};
use w4::{W4_N, w4_eventrabbit, w4_raw, w4_setup, w4_teardown};

/// Counts allocations while a measurement asks it to (`alloc::counting`).
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

#[tokio::main]
async fn main() {
    let which_arg = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    run().await;
    if let Some(path) = charts::write_ratios(&which_arg) {
        eprintln!("chart: {}", path.display());
    }
}

async fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map(String::as_str).unwrap_or("all");
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(7);
    let tag = uuid::Uuid::new_v4().simple().to_string();

    if which == "w5-idle-eventrabbit" || which == "w5-idle-raw" {
        w5::w5_idle(which == "w5-idle-eventrabbit", &tag).await;
        return;
    }

    if which == "w5-eventrabbit-only" || which == "w5-raw-only" {
        // W5_DLQ=1: the dead-letter queues exist already, as after a first start.
        let queues = w5::w5_setup(&tag, std::env::var_os("W5_DLQ").is_some()).await;
        // W5_SEQUENTIAL=1: the raw consumers started one after another.
        let one_after_another = std::env::var_os("W5_SEQUENTIAL").is_some();
        let (rate, cpu) = if which == "w5-raw-only" {
            with_cpu(w5::w5_raw(&queues, one_after_another)).await
        } else {
            with_cpu(w5::w5_eventrabbit(&queues)).await
        };
        let n = (w5::W5_QUEUES as u64 * w5::W5_EACH) as f64;
        println!(
            "{which}: {rate:.0} msgs/s, {:.1} µs CPU per message",
            cpu / n * 1e6
        );
        let (_c, ch) = raw().await;
        for q in &queues {
            delete_queue(&ch, q).await;
        }
        return;
    }

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

    if which == "w4-eventrabbit-only" || which == "w4-raw-only" {
        // For profiling: `W4_LOG=name` reads a log written before (and kept).
        let kept = std::env::var("W4_LOG").ok();
        let log = kept.clone().unwrap_or_else(|| format!("bench-w4-{tag}"));
        if kept.is_none() || std::env::var("W4_WRITE").is_ok() {
            w4_setup(&log).await;
        }
        let (rate, cpu) = if which == "w4-raw-only" {
            with_cpu(w4_raw(&log)).await
        } else {
            with_cpu(w4_eventrabbit(&log)).await
        };
        println!(
            "{which}: {rate:.0} events/s, {:.2} µs CPU per event",
            cpu / W4_N as f64 * 1e6
        );
        if kept.is_none() {
            w4_teardown(&log).await;
        }
        return;
    }

    println!(
        "runs per workload: {runs} (alternating eventrabbit and the raw client: lapin, or the raw stream reader for W4)\n"
    );
    println!(
        "| workload | eventrabbit median (min–max) | raw client median (min–max) | eventrabbit / raw, median of paired runs (min–max) | |"
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
        set_quorum(on_quorum);
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
    set_quorum(false);
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
        set_quorum(on_quorum);
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
    set_quorum(false);
    #[cfg(feature = "peer-ruststream")]
    if which == "w2-peer" {
        w2_peer(runs, &tag).await;
    }
    if which == "all" || which == "all+quorum" || which == "w4" {
        // Written once; a log is not consumed by reading it, so every run reads it all.
        let log = format!("bench-w4-{tag}");
        eprintln!("  W4: writing {W4_N} events to the log");
        w4_setup(&log).await;
        let (mut er, mut rw) = (Vec::new(), Vec::new());
        let (mut er_cpu, mut rw_cpu) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let (e, r) = paired(
                i,
                || with_cpu(w4_eventrabbit(&log)),
                || with_cpu(w4_raw(&log)),
            )
            .await;
            run_line("W4", i, e.0, r.0, "events/s");
            er.push(e.0);
            rw.push(r.0);
            er_cpu.push(e.1 / W4_N as f64 * 1e6);
            rw_cpu.push(r.1 / W4_N as f64 * 1e6);
        }
        w4_teardown(&log).await;
        row("W4 replay 1M from a log", "events/s", &er, &rw, true);
        row("W4 client CPU per event", "µs", &er_cpu, &rw_cpu, false);
    }
    if which == "all" || which == "alloc" {
        // Allocations (and reallocations) per message, both sides, counted over the whole
        // process (lapin's I/O thread included) in one run each; not timed.
        let (x, q) = (format!("bench-wa-{tag}"), format!("bench-wa-{tag}"));
        w2_setup(&x, &q).await;
        let (_, e2) = alloc::counting(w2_eventrabbit(&x, false)).await;
        let (_, r2) = alloc::counting(w2_raw(&x, false)).await;
        // One count per side: the row's median is that count per message.
        let per_message = |what: &str, n: u64, e: u64, r: u64| {
            row(
                what,
                "allocs",
                &[e as f64 / n as f64],
                &[r as f64 / n as f64],
                false,
            );
        };
        per_message("allocations per confirmed publish (W2)", W2_N, e2, r2);
        let (_c, ch) = raw().await;
        delete_queue(&ch, &q).await;
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
        preload(&q, W1_N).await;
        let (_, e1) = alloc::counting(w1_eventrabbit(&q)).await;
        preload(&q, W1_N).await;
        let (_, r1) = alloc::counting(w1_raw(&q)).await;
        per_message("allocations per consumed message (W1)", W1_N, e1, r1);
        delete_queue(&ch, &q).await;
    }
    if which == "w5" {
        let (mut e5, mut r5) = (vec![], vec![]);
        let (mut e5d, mut r5d) = (vec![], vec![]);
        let (mut e5s, mut r5s) = (vec![], vec![]);
        for i in 0..runs {
            let run = |side: &'static str, restart: bool| {
                let tag = format!("{tag}-{i}-{side}-{restart}");
                async move {
                    let queues = w5::w5_setup(&tag, restart).await;
                    let rate = match side {
                        "e" => w5::w5_eventrabbit(&queues).await,
                        "s" => w5::w5_raw(&queues, true).await,
                        _ => w5::w5_raw(&queues, false).await,
                    };
                    let (_c, ch) = raw().await;
                    for q in &queues {
                        delete_queue(&ch, q).await;
                    }
                    rate
                }
            };
            let (e, r) = paired(i, || run("e", false), || run("r", false)).await;
            run_line("W5 200 queues", i, e, r, "msg/s");
            e5.push(e);
            r5.push(r);
            let (e, r) = paired(i, || run("e", true), || run("r", true)).await;
            run_line("W5 200 queues, dead-letter queues there", i, e, r, "msg/s");
            e5d.push(e);
            r5d.push(r);
            let (e, r) = paired(i, || run("e", false), || run("s", false)).await;
            run_line("W5 vs raw consumers started in turn", i, e, r, "msg/s");
            e5s.push(e);
            r5s.push(r);
        }
        row(
            "W5 200 queues x 500, one connection",
            "msg/s",
            &e5,
            &r5,
            true,
        );
        row(
            "W5 the same, dead-letter queues declared before (a restart)",
            "msg/s",
            &e5d,
            &r5d,
            true,
        );
        row(
            "W5 vs raw lapin starting its consumers one after another",
            "msg/s",
            &e5s,
            &r5s,
            true,
        );
        // Idle memory, each side in a fresh process of its own.
        let idle = |mode: &str| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .arg(mode)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| {
                    l.strip_prefix("rss_kib=")
                        .and_then(|v| v.parse::<f64>().ok())
                })
                .unwrap_or(f64::NAN)
        };
        let (mut ei, mut ri) = (vec![], vec![]);
        for _ in 0..3 {
            ei.push(idle("w5-idle-eventrabbit") / 1024.0);
            ri.push(idle("w5-idle-raw") / 1024.0);
        }
        row("W5 idle RSS with 200 consumers", "MiB", &ei, &ri, false);
    }
    if which == "all" || which == "outbox" {
        let pool = outbox::pool().await;
        let (schema, x) = outbox::setup(&pool, &tag).await;
        // The ceiling of one ordering key: publishes one after another, each confirm
        // awaited before the next.
        let (mut es, mut rs) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let (e, r) = paired(
                i,
                || outbox::sequential(&x, 2_000, false),
                || outbox::sequential(&x, 2_000, true),
            )
            .await;
            run_line("sequential confirmed publish", i, e, r, "msg/s");
            es.push(e);
            rs.push(r);
            let (_c, ch) = raw().await;
            broker::purge(&ch, &x).await;
        }
        row(
            "Sequential confirmed publish (each confirm awaited before the next), 2,000",
            "msg/s",
            &es,
            &rs,
            true,
        );
        for keys in outbox::Keys::ALL {
            let (mut er, mut direct) = (Vec::new(), Vec::new());
            let (mut relay_cpu, mut direct_cpu) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let (r, d) = paired(
                    i,
                    || outbox::relay(&pool, &schema, &x, keys),
                    || outbox::direct(&x),
                )
                .await;
                run_line(
                    &format!("outbox, {}", keys.label()),
                    i,
                    r.rate,
                    d.rate,
                    "msg/s",
                );
                eprintln!(
                    "    CPU per event, broker + PostgreSQL + client: relay {:.1} + {:.1} + {:.1} µs, direct {:.1} + {:.1} + {:.1} µs",
                    r.cpu.broker,
                    r.cpu.database,
                    r.cpu.client,
                    d.cpu.broker,
                    d.cpu.database,
                    d.cpu.client
                );
                er.push(r.rate);
                direct.push(d.rate);
                relay_cpu.push(r.cpu);
                direct_cpu.push(d.cpu);
                let (_c, ch) = raw().await;
                broker::purge(&ch, &x).await;
            }
            row(
                &format!(
                    "Outbox relay drains {} events, {} (vs eventrabbit's direct confirmed publish)",
                    outbox::OUTBOX_N,
                    keys.label()
                ),
                "msg/s",
                &er,
                &direct,
                true,
            );
            outbox::cpu_rows(keys, &relay_cpu, &direct_cpu);
        }
        let (mut p50, mut p99) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let latencies = outbox::latency(&pool, &schema, &x, 200).await;
            p50.push(outbox::quantile(&latencies, 0.5));
            p99.push(outbox::quantile(&latencies, 0.99));
        }
        let (m50, lo50, hi50) = measure::stats(&p50);
        let (m99, lo99, hi99) = measure::stats(&p99);
        println!(
            "| Outbox commit-to-delivery latency, idle relay (200 events per run) | p50 {m50:.0} ({lo50:.0}–{hi50:.0}) µs, p99 {m99:.0} ({lo99:.0}–{hi99:.0}) µs | | | lower is better |"
        );
        outbox::teardown(&pool, &schema, &x).await;
    }
    if which == "all" || which == "lanes" {
        let q = format!("bench_lanes_{tag}");
        for keyed in [true, false] {
            let (mut er, mut raw_rates) = (Vec::new(), Vec::new());
            for i in 0..runs {
                lanes::preload(&q).await;
                let e = lanes::eventrabbit(&q, keyed).await;
                lanes::preload(&q).await;
                let r = lanes::raw_in_order(&q).await;
                run_line(
                    if keyed { "lanes" } else { "prefetch(1)" },
                    i,
                    e,
                    r,
                    "events/s",
                );
                er.push(e);
                raw_rates.push(r);
            }
            let what = if keyed {
                "keyed lanes, 8 keys in parallel (`order_by`, prefetch 64)"
            } else {
                "`prefetch(1)`"
            };
            row(
                &format!(
                    "Keyed order: {} events over {} keys, 1 ms handler, eventrabbit {what} (vs raw lapin `prefetch(1)`)",
                    lanes::LANES_N,
                    lanes::KEYS
                ),
                "events/s",
                &er,
                &raw_rates,
                true,
            );
        }
        let (_c, ch) = raw().await;
        delete_queue(&ch, &q).await;
    }
    if which == "all" || which == "superstream" {
        eprintln!(
            "  superstream: writing {} events to each log",
            superstream::SS_N
        );
        let (one, parts) = superstream::setup(&tag).await;
        let partition_streams: Vec<String> = (0..superstream::PARTITIONS)
            .map(|i| format!("{parts}.p{i}"))
            .collect();
        for partitioned in [false, true] {
            let (mut er, mut rw) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let (e, r) = if partitioned {
                    paired(
                        i,
                        || superstream::eventrabbit(&parts, Some(superstream::PARTITIONS)),
                        || superstream::raw_client(partition_streams.clone()),
                    )
                    .await
                } else {
                    paired(
                        i,
                        || superstream::eventrabbit(&one, None),
                        || superstream::raw_client(vec![one.clone()]),
                    )
                    .await
                };
                run_line(
                    if partitioned {
                        "4 partitions"
                    } else {
                        "one stream"
                    },
                    i,
                    e,
                    r,
                    "events/s",
                );
                er.push(e);
                rw.push(r);
            }
            let what = if partitioned {
                "a log of 4 partitions (unnamed `partitions(4)` reader; raw: 4 consumers)"
            } else {
                "one stream (raw: 1 consumer)"
            };
            row(
                &format!("Replay {} events from {what}", superstream::SS_N),
                "events/s",
                &er,
                &rw,
                true,
            );
        }
        superstream::teardown(&one, &parts).await;
    }
    if which == "all" || which == "inbox" {
        let pool = outbox::pool().await;
        let db = inbox::setup(&pool, &tag).await;
        let q = format!("bench_inbox_{tag}");
        let (mut plain, mut per_message, mut batched) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..runs {
            let measure = |action: &'static str, prefetch: u16| {
                let (q, db) = (q.clone(), db.clone());
                async move {
                    inbox::preload(&q, action).await;
                    inbox::consume(&q, action, &db, prefetch).await
                }
            };
            let (p, m) = paired(
                i,
                || measure("BENCH_ROW_PLAIN", 100),
                || measure("BENCH_ROW_INBOX", 100),
            )
            .await;
            let b = measure("BENCH_ROW_BATCH", 300).await;
            eprintln!(
                "  inbox run {}: plain transaction {p:.0}/s, inbox {m:.0}/s ({:.3}), batch inbox {b:.0}/s ({:.2}x per message)",
                i + 1,
                m / p,
                b / m
            );
            plain.push(p);
            per_message.push(m);
            batched.push(b);
        }
        row(
            &format!(
                "Inbox: {} messages, one row each, `Inbox::begin` + row + commit (vs the same transaction without the inbox)",
                inbox::INBOX_N
            ),
            "msg/s",
            &per_message,
            &plain,
            true,
        );
        row(
            &format!(
                "Inbox, batch handler (`batch(max = 100)`, prefetch 300, `Inbox::begin_batch`, rows in one statement), {} messages (vs the per-message inbox handler, prefetch 100)",
                inbox::INBOX_N
            ),
            "msg/s",
            &batched,
            &per_message,
            true,
        );
        let (_c, ch) = raw().await;
        delete_queue(&ch, &q).await;
        inbox::teardown(&pool, &tag).await;
    }
    if which == "all" || which == "es" {
        let pool = outbox::pool().await;
        let schema = es::setup(&pool, &tag).await;
        for streams in [1, 1_000] {
            let (mut er, mut raw) = (Vec::new(), Vec::new());
            for i in 0..runs {
                let (e, r) = paired(
                    i,
                    || es::appends(&pool, &schema, streams, false),
                    || es::appends(&pool, &schema, streams, true),
                )
                .await;
                run_line(&format!("appends, {streams} streams"), i, e, r, "appends/s");
                er.push(e);
                raw.push(r);
            }
            row(
                &format!(
                    "Event store appends, {} one-event appends on {streams} stream(s), 8 in flight (vs a hand-written transaction inserting the event and outbox rows)",
                    es::APPENDS
                ),
                "appends/s",
                &er,
                &raw,
                true,
            );
        }
        es::fill_aggregate(&pool, &schema).await;
        let (mut snap, mut full) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let (s, f) = paired(
                i,
                || es::load(&pool, &schema, true),
                || es::load(&pool, &schema, false),
            )
            .await;
            run_line("load 10,000 events (snapshot vs replay)", i, s, f, "ms");
            snap.push(s);
            full.push(f);
        }
        row(
            &format!(
                "Load an aggregate of {} events: from a snapshot (vs replaying every event)",
                es::LOADED
            ),
            "ms",
            &snap,
            &full,
            false,
        );
        let (mut p50, mut p99) = (Vec::new(), Vec::new());
        for i in 0..runs {
            let latencies =
                es::command_to_projection(&pool, &schema, &format!("{tag}-{i}"), 200).await;
            p50.push(outbox::quantile(&latencies, 0.5));
            p99.push(outbox::quantile(&latencies, 0.99));
        }
        let (m50, lo50, hi50) = measure::stats(&p50);
        let (m99, lo99, hi99) = measure::stats(&p99);
        println!(
            "| Command to projection update (append, relay, broker, projector; 200 commands per run) | p50 {m50:.0} ({lo50:.0}–{hi50:.0}) µs, p99 {m99:.0} ({lo99:.0}–{hi99:.0}) µs | | | lower is better |"
        );
        es::teardown(&pool, &schema).await;
    }
    if which == "w6" {
        let (mut e50, mut e99, mut e999) = (vec![], vec![], vec![]);
        let (mut r50, mut r99, mut r999) = (vec![], vec![], vec![]);
        let mut curves = None;
        for i in 0..runs {
            let (q1, q2) = (
                format!("bench-w6-e-{tag}-{i}"),
                format!("bench-w6-r-{tag}-{i}"),
            );
            let (e, r) = paired(i, || w6::w6_eventrabbit(&q1), || w6::w6_raw(&q2)).await;
            run_line("W6 p99", i, e.p99_us, r.p99_us, "µs");
            e50.push(e.p50_us);
            e99.push(e.p99_us);
            e999.push(e.p999_us);
            r50.push(r.p50_us);
            r99.push(r.p99_us);
            r999.push(r.p999_us);
            curves = Some((e.curve, r.curve));
            let (_c, ch) = raw().await;
            delete_queue(&ch, &q1).await;
            delete_queue(&ch, &q2).await;
        }
        let load = format!("{} events/s for {} s", w6::rate(), w6::W6_SECS);
        row(&format!("W6 latency p50, {load}"), "µs", &e50, &r50, false);
        row(&format!("W6 latency p99, {load}"), "µs", &e99, &r99, false);
        row(
            &format!("W6 latency p99.9, {load}"),
            "µs",
            &e999,
            &r999,
            false,
        );
        if let Some((e, r)) = curves
            && let Some(path) = charts::write_latency(
                &format!("W6 latency distribution, {load} (last run)"),
                &e,
                &r,
            )
        {
            eprintln!("chart: {}", path.display());
        }
    }
    if which == "w3-transient" {
        // Raw lapin alone, one thing changed at a time: the requests' delivery mode and the
        // client channel's confirm mode (why eventrabbit's requests are transient).
        let (mut ta, mut pn, mut tn, mut pa) = (vec![], vec![], vec![], vec![]);
        for i in 0..runs {
            let qs: Vec<String> = (0..4).map(|k| format!("bench-w3t-{k}-{tag}-{i}")).collect();
            let (a, n) = paired(
                i,
                || w3::w3_raw_mode(&qs[0], true, false, 1),
                || w3::w3_raw_mode(&qs[1], false, false, 2),
            )
            .await;
            let (c, d) = paired(
                i,
                || w3::w3_raw_mode(&qs[2], false, false, 1),
                || w3::w3_raw_mode(&qs[3], true, false, 2),
            )
            .await;
            run_line(
                "W3 p50 transient+confirm / persistent none",
                i,
                a.p50_us,
                n.p50_us,
                "µs",
            );
            run_line(
                "W3 p50 transient none / persistent+confirm",
                i,
                c.p50_us,
                d.p50_us,
                "µs",
            );
            ta.push(a.p50_us);
            pn.push(n.p50_us);
            tn.push(c.p50_us);
            pa.push(d.p50_us);
            let (_c, ch) = raw().await;
            for q in &qs {
                delete_queue(&ch, q).await;
            }
        }
        row(
            "W3 raw p50, transient+confirm vs persistent none",
            "µs",
            &ta,
            &pn,
            false,
        );
        row(
            "W3 raw p50, transient none vs persistent+confirm",
            "µs",
            &tn,
            &pa,
            false,
        );
    }
    if which == "w3-split" {
        // Which side of an RPC costs what: each client against each server, in turn.
        let mut rows: Vec<(&str, Vec<f64>)> = vec![
            ("eventrabbit client, eventrabbit server", vec![]),
            ("eventrabbit client, raw server", vec![]),
            ("raw client, eventrabbit server", vec![]),
            ("raw client in confirm mode, raw server", vec![]),
            ("raw client, raw server", vec![]),
        ];
        for i in 0..runs {
            let qs: Vec<String> = (0..5).map(|k| format!("bench-w3s-{k}-{tag}-{i}")).collect();
            let only: Option<usize> = std::env::var("W3_SPLIT_ONLY")
                .ok()
                .and_then(|v| v.parse().ok());
            if let Some(k) = only {
                let r = match k {
                    0 => w3::w3_eventrabbit_client(&qs[0], false).await,
                    1 => w3::w3_eventrabbit_client(&qs[1], true).await,
                    2 => w3::w3_raw_client(&qs[2], false, false, 1, true).await,
                    3 => w3::w3_raw_client(&qs[3], true, false, 1, false).await,
                    _ => w3::w3_raw_client(&qs[4], false, false, 1, false).await,
                };
                eprintln!("  W3 split {k}: p50 {:.1} µs", r.p50_us);
                let (_c, ch) = raw().await;
                delete_queue(&ch, &qs[k.min(4)]).await;
                continue;
            }
            let results = [
                w3::w3_eventrabbit_client(&qs[0], false).await,
                w3::w3_eventrabbit_client(&qs[1], true).await,
                w3::w3_raw_client(&qs[2], false, false, 1, true).await,
                w3::w3_raw_client(&qs[3], true, false, 1, false).await,
                w3::w3_raw_client(&qs[4], false, false, 1, false).await,
            ];
            for (k, r) in results.iter().enumerate() {
                eprintln!(
                    "  W3 split run {}: {}: p50 {:.1} µs",
                    i + 1,
                    rows[k].0,
                    r.p50_us
                );
                rows[k].1.push(r.p50_us);
            }
            let (_c, ch) = raw().await;
            for q in &qs {
                delete_queue(&ch, q).await;
            }
        }
        let base = rows[4].1.clone();
        for (name, v) in &rows[..4] {
            row(
                &format!("W3 p50, {name} vs raw client, raw server"),
                "µs",
                v,
                &base,
                false,
            );
        }
    }
    if which == "w3-confirm-modes" {
        // Where the time goes: the raw client with its channel in confirm mode and the
        // confirm awaited aside, against no confirm mode at all.
        let (mut aside, mut none) = (vec![], vec![]);
        for i in 0..runs {
            let (q1, q2) = (
                format!("bench-w3m-a-{tag}-{i}"),
                format!("bench-w3m-n-{tag}-{i}"),
            );
            let (a, n) = paired(
                i,
                || w3::w3_raw_with(&q1, true, false),
                || w3_raw(&q2, false),
            )
            .await;
            run_line(
                "W3 p50 confirm mode aside / none",
                i,
                a.p50_us,
                n.p50_us,
                "µs",
            );
            aside.push(a.p50_us);
            none.push(n.p50_us);
            let (_c, ch) = raw().await;
            delete_queue(&ch, &q1).await;
            delete_queue(&ch, &q2).await;
        }
        row(
            "W3 raw p50, confirm mode (aside) vs none",
            "µs",
            &aside,
            &none,
            false,
        );
    }
    if which == "all" || which == "all+quorum" || which == "w3" {
        let (mut p50e, mut p99e, mut cpse, mut bige) = (vec![], vec![], vec![], vec![]);
        let (mut p50r, mut p99r, mut cpsr, mut bigr) = (vec![], vec![], vec![], vec![]);
        let (mut p50c, mut cpsc) = (vec![], vec![]);
        for i in 0..runs {
            let q = format!("bench-w3-{tag}-{i}");
            let q2 = format!("bench-w3-raw-{tag}-{i}");
            let q3 = format!("bench-w3-rawc-{tag}-{i}");
            // Paired with the unconfirmed raw client, persistent requests (the target);
            // the same client with transient requests, as eventrabbit sends them, right
            // after.
            let (e, r) = paired(i, || w3_eventrabbit(&q), || w3_raw(&q2, false)).await;
            let c = w3::w3_raw_mode(&q3, false, false, 1).await;
            run_line("W3 p50", i, e.p50_us, r.p50_us, "µs");
            run_line("W3 p50 vs raw transient", i, e.p50_us, c.p50_us, "µs");
            run_line(
                "W3 64 concurrent",
                i,
                e.calls_per_sec,
                r.calls_per_sec,
                "calls/s",
            );
            run_line(
                "W3 1024 concurrent",
                i,
                e.calls_per_sec_1024,
                r.calls_per_sec_1024,
                "calls/s",
            );
            p50e.push(e.p50_us);
            p99e.push(e.p99_us);
            cpse.push(e.calls_per_sec);
            bige.push(e.calls_per_sec_1024);
            p50r.push(r.p50_us);
            p99r.push(r.p99_us);
            cpsr.push(r.calls_per_sec);
            bigr.push(r.calls_per_sec_1024);
            p50c.push(c.p50_us);
            cpsc.push(c.calls_per_sec);
            let (_c, ch) = raw().await;
            for queue in [&q, &q2, &q3] {
                delete_queue(&ch, queue).await;
            }
        }
        row("W3 RPC sequential p50", "µs", &p50e, &p50r, false);
        row("W3 RPC sequential p99", "µs", &p99e, &p99r, false);
        row("W3 RPC 64 concurrent", "calls/s", &cpse, &cpsr, true);
        row("W3 RPC 1024 concurrent", "calls/s", &bige, &bigr, true);
        row(
            "W3 p50 vs raw lapin with transient requests",
            "µs",
            &p50e,
            &p50c,
            false,
        );
        row(
            "W3 64 concurrent vs raw lapin with transient requests",
            "calls/s",
            &cpse,
            &cpsc,
            true,
        );
    }
}

/// W2 for eventrabbit, raw lapin and RustStream 0.7, the three taking turns in each run
/// (the first of the run rotates), with rows for eventrabbit against each.
#[cfg(feature = "peer-ruststream")]
async fn w2_peer(runs: usize, tag: &str) {
    let (mut er, mut rw, mut rs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut er_cpu, mut rw_cpu, mut rs_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let mut took = [(0.0, 0.0); 3];
        for k in 0..3 {
            let side = (i + k) % 3;
            let (x, q) = (
                format!("bench-w2p-{tag}-{i}-{side}"),
                format!("bench-w2p-{tag}-{i}-{side}"),
            );
            w2_setup(&x, &q).await;
            took[side] = match side {
                0 => with_cpu(w2_eventrabbit(&x, false)).await,
                1 => with_cpu(w2_raw(&x, false)).await,
                _ => with_cpu(peer::w2_ruststream(&x)).await,
            };
            let (_c, ch) = raw().await;
            delete_queue(&ch, &q).await;
            let _ = ch
                .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let [(e, ec), (r, rc), (p, pc)] = took;
        eprintln!(
            "  W2 peer run {}: eventrabbit {e:.1} msg/s, raw lapin {r:.1} msg/s, RustStream {p:.1} msg/s",
            i + 1
        );
        er.push(e);
        rw.push(r);
        rs.push(p);
        er_cpu.push(ec / W2_N as f64 * 1e6);
        rw_cpu.push(rc / W2_N as f64 * 1e6);
        rs_cpu.push(pc / W2_N as f64 * 1e6);
    }
    row(
        "W2 confirmed publish 100k (vs raw lapin)",
        "msg/s",
        &er,
        &rw,
        true,
    );
    row(
        "W2: client CPU per message (vs raw lapin)",
        "µs",
        &er_cpu,
        &rw_cpu,
        false,
    );
    row(
        "W2 confirmed publish 100k (vs RustStream 0.7)",
        "msg/s",
        &er,
        &rs,
        true,
    );
    row(
        "W2: client CPU per message (vs RustStream 0.7)",
        "µs",
        &er_cpu,
        &rs_cpu,
        false,
    );
}
