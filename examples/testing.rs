//! Unit-testing handlers without RabbitMQ, on `eventrabbit::testing::TestBroker`.
//!
//! ```sh
//! cargo test --example testing      # the tests below (also part of `cargo test --workspace`)
//! cargo run --example testing       # the same checks as a program
//! ```

use eventrabbit::testing::TestBroker;
use eventrabbit::{Config, ConsumeChannel, ExchangeKind, RetryConfig, State, function};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::{Arc, Mutex};

/// What the service remembers: in production a database handle registered with
/// `Config::with_state`; in these tests a fake the test keeps and looks into.
#[derive(Default)]
struct Welcomed(Mutex<Vec<String>>);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Welcome {
    user_id: i64,
    text: String,
}

/// The handler under test: welcomes new users and publishes the welcome.
#[function(
    action = "USER_SIGNED_UP",
    exchange = "welcomes",
    action_reply = "USER_WELCOMED"
)]
async fn welcome(user_id: i64, name: String, db: State<Welcomed>) -> Result<Welcome, String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    db.0.lock().unwrap().push(name.clone());
    Ok(Welcome {
        user_id,
        text: format!("welcome, {name}"),
    })
}

/// Declares the service's queue on a fresh test broker, whose handlers get `db`.
fn broker_with(db: Arc<Welcomed>) -> TestBroker {
    let retry = RetryConfig::default().with_max_retries(2);
    let broker = TestBroker::with_config(Config::default().with_retry(retry)).with_state_arc(db);
    broker
        .consume(ConsumeChannel::new("signups").exchange("users", ExchangeKind::Fanout))
        .expect("queue declared");
    broker.declare_exchange("welcomes", ExchangeKind::Fanout); // where the results go
    broker
}

fn broker() -> TestBroker {
    broker_with(Arc::default())
}

async fn publishing_a_signup_welcomes_the_user() {
    let db = Arc::new(Welcomed::default());
    let broker = broker_with(db.clone());
    broker
        .publish(
            "users",
            "",
            "USER_SIGNED_UP",
            &json!({"user_id": 7, "name": "ann"}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    assert_eq!(*db.0.lock().unwrap(), ["ann"]);
    let out = broker.published_to("welcomes");
    assert_eq!(out[0].action.as_deref(), Some("USER_WELCOMED"));
    assert_eq!(out[0].data, json!({"user_id": 7, "text": "welcome, ann"}));
}

async fn a_signup_without_a_name_is_retried_then_dead_lettered() {
    let broker = broker();
    broker
        .publish(
            "users",
            "",
            "USER_SIGNED_UP",
            &json!({"user_id": 8, "name": ""}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let dead = broker.dead_letters("signups");
    assert_eq!(dead[0].code, "retries-exhausted");
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(broker.retry_delays("signups").len(), 2);
}

async fn a_signup_with_a_wrong_field_is_dead_lettered_at_once() {
    let broker = broker();
    broker
        .publish(
            "users",
            "",
            "USER_SIGNED_UP",
            &json!({"user_id": "seven", "name": "bo"}),
        )
        .unwrap();
    broker.run_until_idle().await.unwrap();
    let dead = broker.dead_letters("signups");
    assert_eq!(dead[0].code, "invalid-data");
    assert!(dead[0].reason.contains("user_id"));
}

async fn the_handler_answers_rpc_calls() {
    let broker = broker();
    let reply: Welcome = broker
        .call(
            "signups",
            "USER_SIGNED_UP",
            json!({"user_id": 9, "name": "cy"}),
        )
        .await
        .unwrap();
    assert_eq!(
        reply,
        Welcome {
            user_id: 9,
            text: "welcome, cy".into()
        }
    );
}

#[tokio::test]
async fn signup_is_welcomed() {
    publishing_a_signup_welcomes_the_user().await;
}

#[tokio::test]
async fn empty_name_is_retried_then_dead_lettered() {
    a_signup_without_a_name_is_retried_then_dead_lettered().await;
}

#[tokio::test]
async fn wrong_field_is_dead_lettered() {
    a_signup_with_a_wrong_field_is_dead_lettered_at_once().await;
}

#[tokio::test]
async fn rpc() {
    the_handler_answers_rpc_calls().await;
}

#[tokio::main]
async fn main() {
    publishing_a_signup_welcomes_the_user().await;
    a_signup_without_a_name_is_retried_then_dead_lettered().await;
    a_signup_with_a_wrong_field_is_dead_lettered_at_once().await;
    the_handler_answers_rpc_calls().await;
    println!("all handler checks passed on the in-memory test broker (no RabbitMQ involved)");
}
