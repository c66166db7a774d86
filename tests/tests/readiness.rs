//! Readiness (issue 29): `Handle::start` returns once the consumer's queue, bindings and
//! dead-letter queue exist and `basic.consume` is active, so a publish made right after
//! it reaches the handler, on a fresh virtual host, every time; `Handle::declare` sets
//! the topology up without consuming; a consumer that cannot start says why at once.

use eventrabbit::{Binding, Config, ConsumeChannel, Error, MessageContext, consumer};
use eventrabbit_tests::*;
use serde_json::json;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

static GOT: Recorder = Recorder::new();

#[consumer(action = "T_READY")]
async fn ready(n: u64, ctx: MessageContext) {
    GOT.record(json!({"queue": ctx.queue(), "n": n}));
}

/// A fresh virtual host for one test, removed when dropped.
struct Vhost(String);

impl Vhost {
    fn new() -> Self {
        let name = unique("vh-ready");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self(name)
    }

    fn url(&self) -> String {
        let base = amqp_addr();
        let (server, _) = base.rsplit_once('/').expect("a URL with a vhost");
        format!("{server}/{}", self.0)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

/// On a fresh virtual host (nothing declared before), a mandatory publish right after
/// `start` returns is routed to the consumer and handled, 20 times in a row.
#[tokio::test]
async fn a_publish_right_after_start_reaches_the_consumer() {
    let vhost = Vhost::new();
    let (events, handle) = deps_at(&vhost.url(), Config::default()).await;
    let mut consumers = Vec::new();
    for n in 0..20u64 {
        let queue = format!("q-ready-{n}");
        let exchange = format!("x-ready-{n}");
        let consumer = handle
            .start(
                ConsumeChannel::new(&queue)
                    .bind(Binding::fanout(&exchange))
                    .actions(["T_READY"]),
            )
            .await
            .expect("started");
        assert_eq!(consumer.queue(), queue);
        events
            .publish_mandatory(&exchange, "", "T_READY", &json!({"n": n}))
            .await
            .unwrap_or_else(|e| panic!("publish {n} right after start: {e}"));
        consumers.push(consumer);
    }
    let got = GOT.wait_for(20, WAIT).await;
    for n in 0..20u64 {
        assert!(
            got.iter()
                .any(|v| v["queue"] == format!("q-ready-{n}").as_str() && v["n"] == n),
            "message {n} handled: {got:?}"
        );
    }
    handle.shutdown().await;
    for consumer in consumers {
        consumer.join().await.expect("ended by the shutdown");
    }
}

/// `declare` sets up the queue and its bindings without consuming: a mandatory publish is
/// routed into the queue, which keeps it.
#[tokio::test]
async fn declare_sets_the_topology_up_without_consuming() {
    let vhost = Vhost::new();
    let (events, handle) = deps_at(&vhost.url(), Config::default()).await;
    let channel = ConsumeChannel::new("q-declared").bind(Binding::fanout("x-declared"));
    handle.declare(&channel).await.expect("declared");
    events
        .publish_mandatory("x-declared", "", "T_READY", &json!({"n": 1}))
        .await
        .expect("routed to the declared queue");
    let conn = lapin::Connection::connect(&vhost.url(), lapin::ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    assert_eq!(
        queue_len(&ch, "q-declared").await,
        1,
        "kept, nobody consumes"
    );
    let health = handle.health().await;
    assert!(health.consumers.is_empty(), "{health:?}");
    handle.shutdown().await;
}

/// A consumer that cannot start (a handler set naming an action no handler serves) fails
/// `start` at once with the reason.
#[tokio::test]
async fn start_fails_at_once_with_the_reason() {
    let (_events, handle) = deps(Config::default()).await;
    let e = tokio::time::timeout(
        WAIT,
        handle.start(ConsumeChannel::new(unique("q-ready-bad")).actions(["T_NOBODY_SERVES"])),
    )
    .await
    .expect("not a wait")
    .expect_err("refused");
    assert!(matches!(e, Error::UnknownAction { .. }), "{e}");
    handle.shutdown().await;
}
