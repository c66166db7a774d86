//! Application state for handlers (issue 29): a value registered once with
//! `Config::with_state` (or `TestBroker::with_state`) reaches every `State<T>` parameter of
//! consumers, functions and batch handlers, and middleware through `MessageContext::state`;
//! a handler taking a state nobody registered stops its queue from starting, with an error
//! naming the handler and the type.

use eventrabbit::middleware::{BoxOutcome, Middleware, Next};
use eventrabbit::testing::TestBroker;
use eventrabbit::{
    Binding, Config, ConsumeChannel, Error, MessageContext, State, consumer, function,
};
use eventrabbit_tests::*;
use serde_json::json;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);

/// What the service made in `main`: where handlers record what they saw.
struct Seen {
    tx: mpsc::UnboundedSender<String>,
}

impl Seen {
    fn new() -> (Self, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    fn saw(&self, what: String) {
        let _ = self.tx.send(what);
    }
}

/// A second state type, read through an alias marked `#[state]`.
struct Greeting(String);

type GreetingState = State<Greeting>;

/// Never registered anywhere.
struct NeverRegistered;

#[consumer(action = "S_SEEN")]
async fn seen(n: u64, seen: State<Seen>, #[state] greeting: GreetingState) {
    seen.saw(format!("{} {n}", greeting.0));
}

#[function(action = "S_ADD", exchange = "s-results")]
async fn add(n: u64, seen: eventrabbit::State<Seen>) -> serde_json::Value {
    seen.saw(format!("add {n}"));
    json!({"sum": n + 1})
}

#[derive(serde::Deserialize)]
struct Item {
    #[allow(dead_code)]
    n: u64,
}

#[consumer(action = "S_BATCH", batch(max = 3, window = "20ms"))]
async fn batched(items: Vec<Item>, seen: State<Seen>) {
    seen.saw(format!("batch of {}", items.len()));
}

#[consumer(action = "S_NEEDS_MORE")]
async fn needs_more(_n: u64, _never: State<NeverRegistered>) {}

/// Middleware that reads the state through the context.
struct Announce;

impl Middleware for Announce {
    fn call<'a>(&'a self, ctx: &'a MessageContext, next: Next<'a>) -> BoxOutcome<'a> {
        Box::pin(async move {
            if let Some(seen) = ctx.state::<Seen>() {
                seen.saw(format!("layer {}", ctx.queue()));
            }
            next.run().await
        })
    }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a handler saw the message in time")
        .expect("the state is alive")
}

/// On the real broker: a consumer with two state parameters (one through a `#[state]`
/// alias), a function answering a call, a batch handler and a middleware layer all see
/// the values registered in the `Config`.
#[tokio::test]
async fn registered_state_reaches_every_kind_of_handler() {
    let (state, mut rx) = Seen::new();
    let config = Config::default()
        .with_state(state)
        .with_state(Greeting("hello".into()));
    let (events, handle) = deps(config).await;
    let (_conn, ch) = raw_channel().await;
    ch.exchange_declare(
        "s-results".into(),
        lapin::ExchangeKind::Fanout,
        lapin::options::ExchangeDeclareOptions::default(),
        Default::default(),
    )
    .await
    .unwrap();
    let queue = unique("q-state");
    let exchange = unique("x-state");
    let consumer = handle
        .start_with(
            ConsumeChannel::new(&queue)
                .bind(Binding::fanout(&exchange))
                .actions(["S_SEEN", "S_ADD", "S_BATCH"]),
            eventrabbit::middleware::Layers::new().with(Announce),
        )
        .await
        .expect("started: every state is registered");

    events
        .publish(&exchange, "", "S_SEEN", &json!({"n": 7}))
        .await
        .unwrap();
    assert_eq!(next_seen(&mut rx).await, format!("layer {queue}"));
    assert_eq!(next_seen(&mut rx).await, "hello 7");

    let reply: serde_json::Value = events.call(&queue, "S_ADD", json!({"n": 1})).await.unwrap();
    assert_eq!(reply, json!({"sum": 2}));
    assert_eq!(next_seen(&mut rx).await, format!("layer {queue}"));
    assert_eq!(next_seen(&mut rx).await, "add 1");

    for n in 0..3u64 {
        events
            .publish(&exchange, "", "S_BATCH", &json!({"n": n}))
            .await
            .unwrap();
    }
    let mut batch_lines = Vec::new();
    let mut handled = 0;
    while handled < 3 {
        let line = next_seen(&mut rx).await;
        if let Some(size) = line.strip_prefix("batch of ") {
            handled += size.parse::<usize>().unwrap();
            batch_lines.push(line);
        }
    }
    assert_eq!(handled, 3, "{batch_lines:?}");

    handle.shutdown().await;
    consumer.join().await.expect("ended by the shutdown");
    cleanup(&[&queue], &[&exchange]).await;
}

/// A queue whose handler takes a state nobody registered does not start: `start` fails at
/// once with an error naming the handler and the type, and nothing consumes the queue.
#[tokio::test]
async fn a_missing_state_stops_the_queue_from_starting_and_names_handler_and_type() {
    let (state, _rx) = Seen::new();
    let (_events, handle) = deps(Config::default().with_state(state)).await;
    let queue = unique("q-state-missing");
    let error = tokio::time::timeout(
        WAIT,
        handle.start(ConsumeChannel::new(&queue).actions(["S_SEEN"])),
    )
    .await
    .expect("refused at once, not a wait")
    .expect_err("a missing state is refused");
    let Error::MissingState {
        queue: q,
        handler,
        state,
    } = &error
    else {
        panic!("expected MissingState, got {error:?}");
    };
    assert_eq!(q, &queue);
    // `seen` has its `Seen` but lacks its `Greeting`.
    assert!(handler.ends_with("::seen"), "{error}");
    assert!(state.ends_with("::Greeting"), "{error}");
    let text = error.to_string();
    assert!(
        text.contains("Config::with_state") && text.contains("Greeting"),
        "{text}"
    );
    assert!(!error.is_retryable(), "a missing state is not weather");
    let health = handle.health().await;
    assert!(
        !health
            .consumers
            .iter()
            .any(|c| c.queue == queue && c.state == eventrabbit::ConsumerState::Running),
        "{health:?}"
    );
    // The same with `consume`.
    let error = handle
        .consume(ConsumeChannel::new(&queue).actions(["S_NEEDS_MORE"]))
        .await
        .expect_err("refused");
    assert!(
        matches!(&error, Error::MissingState { handler, state, .. }
            if handler.ends_with("::needs_more") && state.ends_with("::NeverRegistered")),
        "{error:?}"
    );
    handle.shutdown().await;
    cleanup(&[&queue], &[]).await;
}

/// The in-memory broker takes the test's own values, and refuses a missing one as the real
/// broker does.
#[tokio::test]
async fn the_test_broker_takes_the_tests_own_state() {
    let (state, mut rx) = Seen::new();
    let broker = TestBroker::new()
        .with_state(state)
        .with_state(Greeting("fake".into()));
    broker.declare_exchange("s-results", eventrabbit::ExchangeKind::Fanout);
    broker
        .consume(
            ConsumeChannel::new("q-state-test")
                .bind(Binding::fanout("x-state-test"))
                .actions(["S_SEEN", "S_ADD"]),
        )
        .unwrap();
    broker
        .publish("x-state-test", "", "S_SEEN", &json!({"n": 3}))
        .unwrap();
    broker.run_until_idle().await.unwrap();
    assert_eq!(rx.try_recv().unwrap(), "fake 3");
    let reply: serde_json::Value = broker
        .call("q-state-test", "S_ADD", json!({"n": 4}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"sum": 5}));
    assert_eq!(rx.try_recv().unwrap(), "add 4");

    let bare = TestBroker::new();
    let error = bare
        .consume(ConsumeChannel::new("q-state-bare").actions(["S_SEEN"]))
        .expect_err("no state registered");
    assert!(
        matches!(&error, Error::MissingState { state, .. } if state.ends_with("::Seen")),
        "{error:?}"
    );
}

/// Registering a value the service keeps an `Arc` of hands the same value to handlers.
#[test]
fn a_shared_value_is_the_one_handlers_see() {
    let shared = std::sync::Arc::new(Mutex::new(0u32));
    let config = Config::default().with_state_arc(shared.clone());
    *config.state.get::<Mutex<u32>>().unwrap().lock().unwrap() += 1;
    assert_eq!(*shared.lock().unwrap(), 1);
}
