//! An order service that writes an order and its `ORDER_PLACED` event in one transaction
//! (the transactional outbox), and a consumer that keeps a read table of orders per
//! customer, effectively once (the inbox): a redelivered event changes nothing.
//!
//! ```sh
//! cargo run --example outbox    # DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)
//!                               # and AMQP_ADDR pick the servers
//! ```

use eventrabbit::{
    Config, ConsumeChannel, Events, MessageContext, State, build_event_dependencies, consumer,
};
use eventrabbit_postgres::{Claim, Inbox, Outbox, OutboxMessage, Relay, RelayConfig, migrate};
use serde_json::json;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const SCHEMA: &str = "eventrabbit_example";

/// How many deliveries the consumer has finished (counted or recognised as a repeat), so
/// that the demo waits for them instead of sleeping. Application state, like the inbox.
struct Progress(watch::Sender<usize>);

impl Progress {
    fn finished_one(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    /// Waits until `n` deliveries were finished (or 10 s passed, which it reports).
    async fn wait_for(&self, n: usize) {
        let mut finished = self.0.subscribe();
        let waiting = finished.wait_for(|count| *count >= n);
        if tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .is_err()
        {
            println!("not every delivery was handled within 10 s");
        }
    }
}

/// Keeps `orders_per_customer` current; the inbox makes a repeat of an event a no-op.
/// The inbox and the progress are application state, registered in `main`.
#[consumer(action = "ORDER_PLACED")]
async fn count_order(
    customer: String,
    ctx: MessageContext,
    inbox: State<Inbox>,
    progress: State<Progress>,
) -> Result<(), eventrabbit_postgres::Error> {
    let Claim::New(mut tx) = inbox.begin(&ctx).await? else {
        println!(
            "consumer: {:?} seen before, nothing to do",
            ctx.message_id()
        );
        progress.finished_one();
        return Ok(());
    };
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.orders_per_customer (customer, orders) VALUES ($1, 1) \
         ON CONFLICT (customer) DO UPDATE SET orders = orders_per_customer.orders + 1"
    ))
    .bind(&customer)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    println!("consumer: counted an order of {customer}");
    progress.finished_one();
    Ok(())
}

/// The order service: the order row and its event commit together, or neither does.
async fn place_order(
    pool: &PgPool,
    outbox: &Outbox,
    id: i64,
    customer: &str,
) -> eventrabbit_postgres::Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!(
        "INSERT INTO {SCHEMA}.orders (id, customer) VALUES ($1, $2)"
    ))
    .bind(id)
    .bind(customer)
    .execute(&mut *tx)
    .await?;
    let event = OutboxMessage::new(
        "",
        "ORDER_PLACED",
        &json!({"order_id": id, "customer": customer}),
    )?
    .routing_key("example_order_counts")
    .ordering_key(customer);
    outbox.publish(&mut tx, event).await?;
    tx.commit().await?;
    println!("service: order {id} of {customer} saved, its event in the outbox");
    Ok(())
}

async fn set_up(pool: &PgPool) -> eventrabbit_postgres::Result<()> {
    migrate(pool, SCHEMA).await?;
    for sql in [
        format!("DROP TABLE IF EXISTS {SCHEMA}.orders, {SCHEMA}.orders_per_customer"),
        format!("CREATE TABLE {SCHEMA}.orders (id BIGINT PRIMARY KEY, customer TEXT NOT NULL)"),
        format!(
            "CREATE TABLE {SCHEMA}.orders_per_customer (customer TEXT PRIMARY KEY, orders BIGINT NOT NULL)"
        ),
        format!("DELETE FROM {SCHEMA}.eventrabbit_outbox"),
        format!("DELETE FROM {SCHEMA}.eventrabbit_inbox"),
    ] {
        sqlx::query(&sql).execute(pool).await?;
    }
    Ok(())
}

async fn redeliver_one(events: &Events, message_id: String) -> eventrabbit::Result<()> {
    // What a relay that died before marking its batch sent does: the same message again.
    events
        .publish_with(
            "",
            "example_order_counts",
            "ORDER_PLACED",
            &json!({"order_id": 1, "customer": "ann"}),
            &eventrabbit::PublishOptions::new().message_id(message_id),
        )
        .await
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let amqp = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let pool = PgPool::connect(&db).await?;
    set_up(&pool).await?;
    let progress = Arc::new(Progress(watch::Sender::new(0)));
    let config = Config::default()
        .with_state(Inbox::new(pool.clone(), SCHEMA, "orders_per_customer")?)
        .with_state_arc(progress.clone());
    let (events, handle) = build_event_dependencies(&amqp, config).await?;
    // Consuming once `start` returns: the relay's first publish reaches it.
    let consumer = handle
        .start(ConsumeChannel::new("example_order_counts").actions(["ORDER_PLACED"]))
        .await?;
    let relay = Relay::new(
        pool.clone(),
        events.clone(),
        RelayConfig::default().schema(SCHEMA),
    )?;
    let relaying = relay.clone();
    tokio::spawn(async move { relaying.run().await });

    let outbox = Outbox::new(SCHEMA)?;
    place_order(&pool, &outbox, 1, "ann").await?;
    place_order(&pool, &outbox, 2, "bob").await?;
    place_order(&pool, &outbox, 3, "ann").await?;
    // A transaction that rolls back leaves no event behind.
    let mut tx = pool.begin().await?;
    outbox
        .publish(
            &mut tx,
            OutboxMessage::new(
                "",
                "ORDER_PLACED",
                &json!({"order_id": 4, "customer": "cy"}),
            )?
            .routing_key("example_order_counts"),
        )
        .await?;
    tx.rollback().await?;
    println!("service: order 4 rolled back, and its event with it");

    // The relay sends the three committed events; the consumer counts them.
    progress.wait_for(3).await;
    let first: String = sqlx::query_scalar(&format!(
        "SELECT message_id FROM {SCHEMA}.eventrabbit_outbox ORDER BY id LIMIT 1"
    ))
    .fetch_one(&pool)
    .await?;
    redeliver_one(&events, first).await?;
    println!("service: the event of order 1 sent once more, with its message id");
    progress.wait_for(4).await;

    let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
        "SELECT customer, orders FROM {SCHEMA}.orders_per_customer ORDER BY customer"
    ))
    .fetch_all(&pool)
    .await?;
    println!("read model: {counts:?} (ann 2, bob 1: the repeat changed nothing)");
    println!("relay: {:?}", relay.health());
    relay.stop();
    handle.shutdown().await;
    consumer.join().await?;
    Ok(())
}
