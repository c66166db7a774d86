//! A projection rebuilt from an event log: users and how many e-mails each was sent.
//!
//! The log (a RabbitMQ stream) is bound to the exchanges the services already publish to,
//! so producers do not change. The projection reads the whole history through the same
//! handlers a queue consumer would use, then keeps reading live events. The log outlives
//! the example: run it twice and the second run's read model counts both runs' events.
//!
//! ```sh
//! cargo run --example replay    # needs the rabbitmq_stream plugin; AMQP_ADDR picks the broker
//! ```

use eventrabbit::{
    Binding, Config, EventLog, Events, MessageContext, PublishOptions, StartAt, State,
    StreamConsumer, build_event_dependencies, consumer,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const USERS: &str = "replay_example_users";
const EMAILS: &str = "replay_example_emails";
const LOG: &str = "replay_example_log";

/// The read model: user id → (name, e-mails sent), and the message id of the last event
/// it read, so that a writer can wait until the model shows its own events. Application
/// state, made in `main` and handed to the handlers taking `State<ReadModel>`.
struct ReadModel {
    users: Mutex<BTreeMap<i64, (String, u64)>>,
    last_read: watch::Sender<Option<String>>,
}

impl ReadModel {
    fn new() -> Self {
        Self {
            users: Mutex::default(),
            last_read: watch::Sender::new(None),
        }
    }

    fn read(&self, ctx: &MessageContext) {
        self.last_read
            .send_replace(ctx.message_id().map(str::to_owned));
    }

    /// Waits until the model has read the event with `message_id` (or 10 s passed, which
    /// it reports): read-your-writes for a projection.
    async fn wait_for(&self, message_id: &str) {
        let mut read = self.last_read.subscribe();
        let waiting = read.wait_for(|last| last.as_deref() == Some(message_id));
        if tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .is_err()
        {
            println!("the projection did not read {message_id} within 10 s");
        }
    }

    fn print(&self, when: &str) {
        println!("read model {when}:");
        for (id, (name, emails)) in self.users.lock().unwrap().iter() {
            println!("  user {id} {name:?}: {emails} e-mail(s)");
        }
    }
}

#[consumer(action = "USER_CREATED")]
async fn user_created(user_id: i64, name: String, model: State<ReadModel>, ctx: MessageContext) {
    model.users.lock().unwrap().entry(user_id).or_default().0 = name;
    model.read(&ctx);
}

#[consumer(action = "EMAIL_SENT")]
async fn email_sent(user_id: i64, model: State<ReadModel>, ctx: MessageContext) {
    model.users.lock().unwrap().entry(user_id).or_default().1 += 1;
    if let (Some(offset), Some(at)) = (ctx.stream_offset(), ctx.timestamp()) {
        tracing::debug!(offset, ?at, "counted an e-mail");
    }
    model.read(&ctx);
}

/// Publishes `data` as `action` to `exchange` under a fresh message id, and returns it.
async fn publish(
    events: &Events,
    exchange: &str,
    action: &str,
    data: serde_json::Value,
) -> eventrabbit::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    let options = PublishOptions::new().message_id(id.clone());
    events
        .publish_with(exchange, "", action, &data, &options)
        .await?;
    Ok(id)
}

#[tokio::main]
async fn main() -> eventrabbit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let model = Arc::new(ReadModel::new());
    let config = Config::default().with_state_arc(model.clone());
    let (events, handle) = build_event_dependencies(&url, config).await?;

    // The log keeps what goes to both exchanges for 30 days.
    handle
        .declare_log(
            &EventLog::new(LOG)
                .bind(Binding::fanout(USERS))
                .bind(Binding::fanout(EMAILS))
                .max_age(Duration::from_secs(30 * 24 * 3600)),
        )
        .await?;

    // History: what the services published before the projection existed.
    for (id, name) in [(1, "ann"), (2, "bob")] {
        publish(
            &events,
            USERS,
            "USER_CREATED",
            json!({"user_id": id, "name": name}),
        )
        .await?;
    }
    let mut last = String::new();
    for id in [1, 1, 2] {
        last = publish(&events, EMAILS, "EMAIL_SENT", json!({"user_id": id})).await?;
    }

    // The projection: the full history from the first event, then live events. It is
    // subscribed once `start_replay` returns.
    let projection = handle
        .start_replay(
            StreamConsumer::new(LOG)
                .start_at(StartAt::First)
                .actions(["USER_CREATED", "EMAIL_SENT"]),
        )
        .await?;
    model.wait_for(&last).await;
    model.print("after the history");

    // Live: it keeps the model current.
    publish(
        &events,
        USERS,
        "USER_CREATED",
        json!({"user_id": 3, "name": "cy"}),
    )
    .await?;
    let last = publish(&events, EMAILS, "EMAIL_SENT", json!({"user_id": 3})).await?;
    model.wait_for(&last).await;
    model.print("with the live events");

    handle.shutdown().await;
    projection.join().await
}
