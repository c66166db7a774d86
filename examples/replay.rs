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
    Binding, Config, EventLog, MessageContext, StartAt, StreamConsumer, build_event_dependencies,
    consumer,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

const USERS: &str = "replay_example_users";
const EMAILS: &str = "replay_example_emails";
const LOG: &str = "replay_example_log";

/// The read model: user id → (name, e-mails sent).
static READ_MODEL: Mutex<BTreeMap<i64, (String, u64)>> = Mutex::new(BTreeMap::new());

#[consumer(action = "USER_CREATED")]
async fn user_created(user_id: i64, name: String) {
    READ_MODEL.lock().unwrap().entry(user_id).or_default().0 = name;
}

#[consumer(action = "EMAIL_SENT")]
async fn email_sent(user_id: i64, ctx: MessageContext) {
    READ_MODEL.lock().unwrap().entry(user_id).or_default().1 += 1;
    if let (Some(offset), Some(at)) = (ctx.stream_offset(), ctx.timestamp()) {
        tracing::debug!(offset, ?at, "counted an e-mail");
    }
}

fn print_model(when: &str) {
    println!("read model {when}:");
    for (id, (name, emails)) in READ_MODEL.lock().unwrap().iter() {
        println!("  user {id} {name:?}: {emails} e-mail(s)");
    }
}

#[tokio::main]
async fn main() -> eventrabbit::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .init();
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let (events, handle) = build_event_dependencies(&url, Config::default()).await?;

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
        events
            .publish(
                USERS,
                "",
                "USER_CREATED",
                &json!({"user_id": id, "name": name}),
            )
            .await?;
    }
    for id in [1, 1, 2] {
        events
            .publish(EMAILS, "", "EMAIL_SENT", &json!({"user_id": id}))
            .await?;
    }

    // The projection: the full history from the first event, then live events.
    let projection = StreamConsumer::new(LOG)
        .start_at(StartAt::First)
        .actions(["USER_CREATED", "EMAIL_SENT"]);
    let replaying = handle.clone();
    let task = tokio::spawn(async move { replaying.replay(projection).await });
    tokio::time::sleep(Duration::from_secs(2)).await;
    print_model("after the history");

    // Live: it keeps the model current.
    events
        .publish(
            USERS,
            "",
            "USER_CREATED",
            &json!({"user_id": 3, "name": "cy"}),
        )
        .await?;
    events
        .publish(EMAILS, "", "EMAIL_SENT", &json!({"user_id": 3}))
        .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    print_model("with the live events");

    handle.shutdown().await;
    task.await.expect("the projection task")?;
    Ok(())
}
