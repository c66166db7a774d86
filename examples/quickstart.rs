//! Quickstart: a consumer, a producer and an RPC call on one broker.
//!
//! ```sh
//! cargo run --example quickstart        # AMQP_ADDR overrides amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//!
//! When no broker answers at `AMQP_ADDR`, it says so in one line and runs the same flow
//! on the in-memory test broker (`eventrabbit::testing::TestBroker`).

use eventrabbit::{
    Config, ConsumeChannel, ExchangeKind, State, build_event_dependencies, consumer, function,
    producer,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Application state, made once in `main` and handed to every handler that takes a
/// `State<Activity>` parameter (a real service passes its database pool, clients and
/// settings the same way). Here it counts the events handled, so that the demo can wait
/// until the last one was handled before it shuts down.
struct Activity {
    handled: watch::Sender<usize>,
}

impl Activity {
    fn new() -> Self {
        Self {
            handled: watch::Sender::new(0),
        }
    }

    fn handled_one(&self) {
        self.handled.send_modify(|n| *n += 1);
    }

    /// Waits until `n` events were handled (or 10 s passed, which it reports).
    async fn wait_for(&self, n: usize) {
        let mut handled = self.handled.subscribe();
        let waiting = handled.wait_for(|count| *count >= n);
        if tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .is_err()
        {
            println!("not every event was handled within 10 s");
        }
    }
}

/// The events the demo causes: two `USER_CREATED`, one `EMAIL_SENT`.
const EVENTS: usize = 3;

#[derive(Debug, Serialize, Deserialize)]
struct UserCreated {
    user_id: i64,
    name: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct EmailSent {
    user_id: i64,
    email: String,
    status: String,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid email address `{0}`")]
struct BadEmail(String);

/// Runs for every `USER_CREATED` event; parameters are read from `data` by name.
/// The last parameter is application state, not read from `data`.
#[consumer(action = "USER_CREATED")]
async fn on_user_created(user_id: i64, name: String, activity: State<Activity>) {
    println!("consumer: user {user_id} was created with name {name:?}");
    activity.handled_one();
}

/// Receives what `send_email` publishes.
#[consumer(action = "EMAIL_SENT")]
async fn on_email_sent(user_id: i64, status: String, activity: State<Activity>) {
    println!("consumer: email to user {user_id} is {status}");
    activity.handled_one();
}

/// Calling it publishes its result to the `user` exchange as `USER_CREATED`.
#[producer(exchange = "quickstart_user", action = "USER_CREATED")]
async fn create_user(user_id: i64, name: String) -> UserCreated {
    UserCreated { user_id, name }
}

/// Answers RPC calls, and publishes its result as `EMAIL_SENT` to the `email` exchange.
#[function(
    action = "SEND_EMAIL",
    exchange = "quickstart_email",
    action_reply = "EMAIL_SENT"
)]
async fn send_email(user_id: i64, email: String) -> Result<EmailSent, BadEmail> {
    if !email.contains('@') {
        return Err(BadEmail(email));
    }
    Ok(EmailSent {
        user_id,
        email,
        status: "sent".into(),
    })
}

#[tokio::main]
async fn main() -> eventrabbit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    if let Err(why) = broker_answers(&url).await {
        println!(
            "no RabbitMQ answers at {url} ({why}): running the same flow on the in-memory test broker"
        );
        return in_memory().await;
    }
    let activity = Arc::new(Activity::new());
    let config = Config::default().with_state_arc(activity.clone());
    let (events, handle) = build_event_dependencies(&url, config).await?;

    // One consumer per queue, all on the same connection. `start` returns once the queue,
    // its bindings and dead-letter queue exist and the broker delivers to it: what is
    // published from now on reaches it.
    let mut consumers = Vec::new();
    for channel in channels() {
        consumers.push(handle.start(channel).await?);
    }

    // Ctrl-C during the demo shuts down the same graceful way as its end.
    tokio::select! {
        result = demo(&events) => {
            result?;
            // The output shows every event handled before the shutdown (they would be
            // handled on the next run otherwise).
            activity.wait_for(EVENTS).await;
        }
        _ = tokio::signal::ctrl_c() => println!("Ctrl-C: shutting down"),
    }

    handle.shutdown().await; // lets in-flight handlers finish, then closes
    for consumer in consumers {
        consumer.join().await?;
    }
    println!("done");
    Ok(())
}

/// The three queues: users (bound to the `user` exchange), RPC requests, and the log of
/// sent e-mails (bound to the `email` exchange).
fn channels() -> [ConsumeChannel; 3] {
    [
        ConsumeChannel::new("quickstart_email_log")
            .exchange("quickstart_email", ExchangeKind::Fanout),
        ConsumeChannel::new("quickstart_users").exchange("quickstart_user", ExchangeKind::Fanout),
        ConsumeChannel::new("quickstart_email_queue"),
    ]
}

/// Whether something accepts connections where `url` points (within 2 s).
async fn broker_answers(url: &str) -> Result<(), String> {
    let uri: lapin::uri::AMQPUri = url.parse()?;
    let address = (uri.authority.host.as_str(), uri.authority.port);
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(address),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2 s".into()),
    }
}

/// The same flow on the in-memory test broker: the same handlers, queues and calls.
async fn in_memory() -> eventrabbit::Result<()> {
    use eventrabbit::testing::TestBroker;
    let broker = TestBroker::new().with_state(Activity::new());
    for channel in channels() {
        broker.consume(channel)?;
    }
    broker
        .scope(async {
            for (id, name) in [(1, "ann"), (2, "bob")] {
                let user = create_user(id, name.into()).await?;
                println!("producer: published {user:?}");
            }
            eventrabbit::Result::Ok(())
        })
        .await?;
    broker.run_until_idle().await?;
    rpc_demo(|data| broker.call("quickstart_email_queue", "SEND_EMAIL", data)).await?;
    println!("done (in memory)");
    Ok(())
}

/// Publishes two users and makes two RPC calls.
async fn demo(events: &eventrabbit::Events) -> eventrabbit::Result<()> {
    for (id, name) in [(1, "ann"), (2, "bob")] {
        let user = create_user(id, name.into()).await?;
        println!("producer: published {user:?}");
    }

    rpc_demo(|data| events.call("quickstart_email_queue", "SEND_EMAIL", data)).await?;

    Ok(())
}

/// Two RPC calls through `call` (the broker's or the in-memory one's): a good request,
/// then one whose `email` is not a string, answered with an error.
async fn rpc_demo<F, Fut>(call: F) -> eventrabbit::Result<()>
where
    F: Fn(serde_json::Value) -> Fut,
    Fut: std::future::Future<Output = eventrabbit::Result<EmailSent>>,
{
    let reply = call(json!({"user_id": 1, "email": "ann@example.com"})).await?;
    println!("rpc: SEND_EMAIL answered {reply:?}");
    match call(json!({"user_id": 2, "email": 42})).await {
        Err(e) => println!("rpc: a bad request is answered with an error: {e}"),
        Ok(r) => println!("rpc: unexpected reply {r:?}"),
    }
    Ok(())
}
