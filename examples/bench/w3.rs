//! W3: RPC, sequential latency and concurrent throughput.

use crate::broker::{addr, declare_queue, persistent, raw};
use eventrabbit::{Config, ConsumeChannel, build_event_dependencies, consumer};
use futures_util::{FutureExt, StreamExt};
use lapin::BasicProperties;
use lapin::options::*;
use lapin::types::FieldTable;
use serde::Deserialize;
use serde_json::json;
use std::time::{Duration, Instant};

const W3_SEQ: usize = 5_000;
const W3_WARMUP: usize = 200;
const W3_CONC: usize = 64;
const W3_CONC_N: usize = 20_000;
/// Many callers at once: how pending calls and the reply consumer hold up.
const W3_CONC_BIG: usize = 1_024;

#[consumer(action = "ECHO")]
async fn echo(n: u64) -> serde_json::Value {
    json!({ "n": n })
}

pub struct RpcResult {
    pub p50_us: f64,
    pub p99_us: f64,
    pub calls_per_sec: f64,
    /// Calls per second with 1,024 callers at once.
    pub calls_per_sec_1024: f64,
}

/// `W3_CONC_N` calls, `callers` at a time; calls per second.
async fn concurrent<F, Fut>(call: &F, callers: usize) -> f64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    futures_util::stream::iter(0..W3_CONC_N as u64)
        .map(call)
        .buffer_unordered(callers)
        .for_each(|_| async {})
        .await;
    W3_CONC_N as f64 / start.elapsed().as_secs_f64()
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
    let calls_per_sec = concurrent(&call, W3_CONC).await;
    let calls_per_sec_1024 = concurrent(&call, W3_CONC_BIG).await;
    RpcResult {
        p50_us: percentile(&lat, 0.5),
        p99_us: percentile(&lat, 0.99),
        calls_per_sec,
        calls_per_sec_1024,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

pub async fn w3_eventrabbit(q: &str) -> RpcResult {
    w3_eventrabbit_client(q, false).await
}

/// eventrabbit's client against eventrabbit's server (one `Handle` for both, as a
/// service calling its own queue has), or against raw lapin's (`raw_server_side`).
pub async fn w3_eventrabbit_client(q: &str, raw_server_side: bool) -> RpcResult {
    let (events, handle) = build_event_dependencies(addr(), Config::default())
        .await
        .unwrap();
    let server = if raw_server_side {
        Server::Raw(raw_server(q).await)
    } else {
        Server::Eventrabbit(eventrabbit_server_on(q, Some(handle)).await)
    };
    let call = |n: u64| {
        let events = events.clone();
        async move {
            let r: serde_json::Value = events.call(q, "ECHO", json!({ "n": n })).await.unwrap();
            assert_eq!(r["n"], n);
        }
    };
    let result = measure_rpc(call).await;
    server.stop().await;
    result
}

/// Raw lapin RPC: a server echoing on `q` (replies confirmed, as eventrabbit's are), a
/// client with direct reply-to and a pending map, sending persistent requests. With
/// `confirmed`, the client waits for the broker's confirm of each request before waiting
/// for its reply (eventrabbit's form until 2026-11-26); without, its channel is not in
/// confirm mode and the reply alone ends the call.
pub async fn w3_raw(q: &str, confirmed: bool) -> RpcResult {
    w3_raw_with(q, confirmed, confirmed).await
}

/// Raw lapin RPC with the client's channel in confirm mode (`confirm_mode`) and each
/// request's confirm awaited before the reply (`await_confirm`) or not.
pub async fn w3_raw_with(q: &str, confirm_mode: bool, await_confirm: bool) -> RpcResult {
    w3_raw_mode(q, confirm_mode, await_confirm, 2).await
}

/// [`w3_raw_with`] with the requests' delivery mode (1 transient, 2 persistent).
pub async fn w3_raw_mode(
    q: &str,
    confirm_mode: bool,
    await_confirm: bool,
    delivery_mode: u8,
) -> RpcResult {
    w3_raw_client(q, confirm_mode, await_confirm, delivery_mode, false).await
}

/// Raw lapin's client against raw lapin's server, or against eventrabbit's
/// (`eventrabbit_server`).
pub async fn w3_raw_client(
    q: &str,
    confirm_mode: bool,
    await_confirm: bool,
    delivery_mode: u8,
    eventrabbit_server: bool,
) -> RpcResult {
    let confirmed = confirm_mode;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use tokio::sync::oneshot;
    let server = if eventrabbit_server {
        Server::Eventrabbit(eventrabbit_server_on(q, None).await)
    } else {
        Server::Raw(raw_server(q).await)
    };
    // Client.
    let (_client_conn, cch) = raw().await;
    if confirmed {
        cch.confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
    }
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
                .with_delivery_mode(delivery_mode)
                .with_reply_to("amq.rabbitmq.reply-to".into())
                .with_correlation_id(id.into());
            let confirm = cch
                .basic_publish(
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
                .unwrap();
            if await_confirm {
                confirm.await.unwrap();
            } else if confirmed && std::env::var_os("W3_DROP_CONFIRM").is_some() {
                // An experiment only: lapin keeps a confirm dropped unawaited until
                // someone waits for all confirms. It shows what waking for a confirm costs.
                drop(confirm);
            } else if confirmed {
                // Confirm mode, the confirm awaited aside (as eventrabbit does now).
                tokio::spawn(async move {
                    let _ = confirm.await;
                });
            }
            let reply = tokio::time::timeout(Duration::from_secs(30), rx)
                .await
                .unwrap()
                .unwrap();
            let v: serde_json::Value = serde_json::from_slice(&reply).unwrap();
            assert_eq!(v["data"]["n"], n);
        }
    };
    let result = measure_rpc(call).await;
    server.stop().await;
    result
}

/// An echo server on `q`: raw lapin, a task per request, replies confirmed, acks queued.
async fn raw_server(q: &str) -> (lapin::Connection, tokio::task::JoinHandle<()>) {
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
    (server_conn, server_task)
}

/// The server side of a W3 run.
enum Server {
    Eventrabbit(
        (
            eventrabbit::Handle,
            tokio::task::JoinHandle<eventrabbit::Result<()>>,
        ),
    ),
    Raw((lapin::Connection, tokio::task::JoinHandle<()>)),
}

impl Server {
    async fn stop(self) {
        match self {
            Server::Eventrabbit((handle, task)) => {
                handle.shutdown().await;
                task.await.unwrap().unwrap();
            }
            Server::Raw((_conn, task)) => task.abort(),
        }
    }
}

/// An eventrabbit echo server on `q`: on `handle` (and its connection), or on a `Handle`
/// of its own.
async fn eventrabbit_server_on(
    q: &str,
    handle: Option<eventrabbit::Handle>,
) -> (
    eventrabbit::Handle,
    tokio::task::JoinHandle<eventrabbit::Result<()>>,
) {
    let handle = match handle {
        Some(handle) => handle,
        None => {
            build_event_dependencies(addr(), Config::default())
                .await
                .unwrap()
                .1
        }
    };
    let h = handle.clone();
    let channel = ConsumeChannel::new(q).prefetch(100).actions(["ECHO"]);
    let task = tokio::spawn(async move { h.consume(channel).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (handle, task)
}
