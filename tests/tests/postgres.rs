//! The transactional outbox and the inbox on the machine's PostgreSQL and RabbitMQ: a
//! rollback publishes nothing, a commit exactly one message; scheduled events; a refused
//! row is marked failed without blocking other keys; a relay killed between publishing
//! and marking makes a duplicate that the inbox absorbs; 10,000 orders through
//! connection failures make exactly 10,000 effects; two relays never send a row twice.

use eventrabbit::{Config, ConsumeChannel, Events, Handle, MessageContext, consumer};
use eventrabbit_postgres::{Claim, Inbox, Outbox, OutboxMessage, Relay, RelayConfig};
use eventrabbit_tests::*;
use lapin::BasicProperties;
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const WAIT: Duration = Duration::from_secs(30);

/// What a test's handlers need, by the queue they consume.
struct Projection {
    inbox: Inbox,
    schema: String,
}

static PROJECTIONS: Mutex<Option<HashMap<String, Arc<Projection>>>> = Mutex::new(None);
/// Every delivery, by queue and message id (duplicates on the wire show here).
static DELIVERIES: Mutex<Option<HashMap<String, HashMap<String, u32>>>> = Mutex::new(None);

fn projection(queue: &str) -> Arc<Projection> {
    PROJECTIONS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|p| p.get(queue).cloned())
        .expect("the test registered its projection")
}

fn delivered(ctx: &MessageContext) {
    let mut d = DELIVERIES.lock().unwrap();
    *d.get_or_insert_with(HashMap::new)
        .entry(ctx.queue().to_owned())
        .or_default()
        .entry(ctx.message_id().unwrap_or("").to_owned())
        .or_default() += 1;
}

/// (distinct message ids, deliveries beyond the first of each) seen on `queue`.
fn deliveries(queue: &str) -> (usize, u32) {
    let d = DELIVERIES.lock().unwrap();
    let m = d
        .as_ref()
        .and_then(|d| d.get(queue))
        .cloned()
        .unwrap_or_default();
    (m.len(), m.values().map(|n| n - 1).sum())
}

#[consumer(action = "T_PG_ORDER")]
async fn project_order(order_id: i64, ctx: MessageContext) -> Result<(), String> {
    delivered(&ctx);
    let p = projection(ctx.queue());
    match p.inbox.begin(&ctx).await.map_err(|e| e.to_string())? {
        Claim::New(mut tx) => {
            sqlx::query(&format!(
                "INSERT INTO {}.effects (order_id, message_id) VALUES ($1, $2)",
                p.schema
            ))
            .bind(order_id)
            .bind(ctx.message_id())
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())
        }
        Claim::Done(_) => Ok(()),
    }
}

#[consumer(action = "T_PG_RESERVE")]
async fn reserve(item: String, ctx: MessageContext) -> Result<Value, String> {
    delivered(&ctx);
    let p = projection(ctx.queue());
    match p.inbox.begin(&ctx).await.map_err(|e| e.to_string())? {
        Claim::New(mut tx) => {
            sqlx::query(&format!(
                "INSERT INTO {}.effects (order_id, message_id) VALUES (0, $1)",
                p.schema
            ))
            .bind(ctx.message_id())
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            let reply = json!({"item": item, "reservation": uuid::Uuid::new_v4().to_string()});
            tx.commit_with_reply(&reply)
                .await
                .map_err(|e| e.to_string())?;
            Ok(reply)
        }
        Claim::Done(reply) => Ok(reply.map(|r| r.json().clone()).unwrap_or(Value::Null)),
    }
}

/// A test's database schema, queue and consumer.
struct Setup {
    pool: PgPool,
    schema: String,
    queue: String,
    outbox: Outbox,
    events: Events,
    handle: Handle,
}

async fn setup(url: Option<&str>, action: &str) -> Setup {
    let pool = pg_pool().await;
    let schema = pg_schema(&pool).await;
    sqlx::query(&format!(
        "CREATE TABLE {schema}.effects (order_id BIGINT NOT NULL, message_id TEXT)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let queue = unique("q-pg");
    let inbox = Inbox::new(pool.clone(), &schema, "projection").unwrap();
    PROJECTIONS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(
            queue.clone(),
            Arc::new(Projection {
                inbox,
                schema: schema.clone(),
            }),
        );
    let config = Config::default().with_max_reconnect_delay(Duration::from_millis(300));
    let (events, handle) = match url {
        Some(url) => deps_at(url, config).await,
        None => deps(config).await,
    };
    start(
        &handle,
        ConsumeChannel::new(&queue).prefetch(50).actions([action]),
    )
    .await;
    Setup {
        outbox: Outbox::new(&schema).unwrap(),
        pool,
        schema,
        queue,
        events,
        handle,
    }
}

impl Setup {
    fn relay(&self, config: RelayConfig) -> Relay {
        Relay::new(
            self.pool.clone(),
            self.events.clone(),
            config.schema(&self.schema),
        )
        .unwrap()
    }

    async fn effects(&self) -> (i64, i64) {
        sqlx::query_as(&format!(
            "SELECT count(*), count(DISTINCT order_id) FROM {}.effects",
            self.schema
        ))
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }

    async fn outbox_row(&self, message_id: &str) -> (Option<String>, bool, bool) {
        let row: (Option<String>, bool, bool) = sqlx::query_as(&format!(
            "SELECT last_error, sent_at IS NOT NULL, failed_at IS NOT NULL \
             FROM {}.eventrabbit_outbox WHERE message_id = $1",
            self.schema
        ))
        .bind(message_id)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        row
    }

    async fn order(&self, id: i64) -> String {
        let mut tx = self.pool.begin().await.unwrap();
        let message = OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": id}))
            .unwrap()
            .routing_key(&self.queue);
        let message_id = self.outbox.publish(&mut tx, message).await.unwrap();
        tx.commit().await.unwrap();
        message_id
    }

    /// Ends the test: its consumer, schema and queue go, and its pool's connections close
    /// (the projection registered for its queue held a clone of the pool: kept, the
    /// idle connections of every finished test added up to PostgreSQL's 100).
    async fn finish(self) {
        self.handle.shutdown_within(Duration::from_secs(5)).await;
        drop_schema(&self.pool, &self.schema).await;
        cleanup(&[&self.queue], &[]).await;
        if let Some(p) = PROJECTIONS.lock().unwrap().as_mut() {
            p.remove(&self.queue);
        }
        self.pool.close().await;
    }
}

/// Each key's rows as they arrive (row `n` under key `k{n % keys}`, as `commit_keyed`
/// writes them): in commit order. A row may arrive twice, right after itself: a publish
/// whose confirm came after its deadline is tried again, and the broker had taken it
/// (at-least-once, same message id; README, "Outbox").
#[derive(Default)]
struct KeyOrder {
    last: HashMap<i64, i64>,
    seen: std::collections::HashSet<i64>,
}

impl KeyOrder {
    fn see(&mut self, body: &[u8], keys: i64) {
        let v: Value = serde_json::from_slice(body).unwrap();
        let n = v["data"]["order_id"].as_i64().unwrap();
        if let Some(before) = self.last.insert(n % keys, n) {
            assert!(before <= n, "key k{}: {n} after {before}", n % keys);
        }
        self.seen.insert(n);
    }

    /// How many different rows arrived.
    fn distinct(&self) -> i64 {
        self.seen.len() as i64
    }
}

/// Commits `rows` outbox rows `{"order_id": n}` for queue `target` in one transaction,
/// row `n` under ordering key `k{n % keys}`.
async fn commit_keyed(s: &Setup, target: &str, rows: i64, keys: i64) {
    let mut tx = s.pool.begin().await.unwrap();
    for n in 0..rows {
        let message = OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": n}))
            .unwrap()
            .routing_key(target)
            .ordering_key(format!("k{}", n % keys));
        s.outbox.publish(&mut tx, message).await.unwrap();
    }
    tx.commit().await.unwrap();
}

fn spawn_relay(relay: &Relay) -> tokio::task::JoinHandle<()> {
    let relay = relay.clone();
    tokio::spawn(async move { relay.run().await })
}

/// A transaction that rolls back publishes nothing; one that commits publishes exactly
/// one message, with the message id the outbox gave it.
#[tokio::test]
async fn a_rollback_publishes_nothing_and_a_commit_exactly_one_message() {
    let s = setup(None, "T_PG_ORDER").await;
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    let mut tx = s.pool.begin().await.unwrap();
    s.outbox
        .publish(
            &mut tx,
            OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 1}))
                .unwrap()
                .routing_key(&s.queue),
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let committed = s.order(2).await;
    wait_until!(WAIT, s.effects().await.0 >= 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.effects().await,
        (1, 1),
        "exactly one message, the committed one"
    );
    let (distinct, duplicates) = deliveries(&s.queue);
    assert_eq!((distinct, duplicates), (1, 0));
    assert!(
        DELIVERIES.lock().unwrap().as_ref().unwrap()[&s.queue].contains_key(&committed),
        "sent with the outbox's message id"
    );
    let rolled_back: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.eventrabbit_outbox",
        s.schema
    ))
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(rolled_back, 1, "the rolled-back row does not exist");
    relay.stop();
    running.await.unwrap();
    assert_eq!(relay.health().sent, 1);
    s.finish().await;
}

/// A scheduled event is not sent before its time, and is sent when due.
#[tokio::test]
async fn a_scheduled_event_is_sent_when_due() {
    let s = setup(None, "T_PG_ORDER").await;
    let relay = s.relay(RelayConfig::default().poll_interval(Duration::from_millis(200)));
    let running = spawn_relay(&relay);
    let due = SystemTime::now() + Duration::from_secs(2);
    let mut tx = s.pool.begin().await.unwrap();
    s.outbox
        .publish(
            &mut tx,
            OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 7}))
                .unwrap()
                .routing_key(&s.queue)
                .publish_at(due),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(s.effects().await.0, 0, "not before its time");
    wait_until!(WAIT, s.effects().await.0 == 1);
    assert_eq!(s.effects().await.0, 1, "sent once due");
    assert!(SystemTime::now() >= due);
    relay.stop();
    running.await.unwrap();
    s.finish().await;
}

/// A row RabbitMQ refuses (its exchange does not exist) is marked failed with the reason,
/// and the rows of other keys behind it are sent.
#[tokio::test]
async fn a_refused_row_is_marked_failed_and_other_keys_go_on() {
    let s = setup(None, "T_PG_ORDER").await;
    let missing = unique("x-pg-missing");
    let mut tx = s.pool.begin().await.unwrap();
    let refused = s
        .outbox
        .publish(
            &mut tx,
            OutboxMessage::new(&missing, "T_PG_ORDER", &json!({"order_id": 1}))
                .unwrap()
                .ordering_key("k1"),
        )
        .await
        .unwrap();
    for (id, key) in [(2, "k2"), (3, "k2")] {
        s.outbox
            .publish(
                &mut tx,
                OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": id}))
                    .unwrap()
                    .routing_key(&s.queue)
                    .ordering_key(key),
            )
            .await
            .unwrap();
    }
    s.outbox
        .publish(
            &mut tx,
            OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 4}))
                .unwrap()
                .routing_key(&s.queue),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    wait_until!(WAIT, s.effects().await.0 >= 3);
    assert_eq!(s.effects().await, (3, 3), "orders 2, 3 and 4 went");
    let (error, sent, failed) = s.outbox_row(&refused).await;
    assert!(failed && !sent, "marked failed");
    assert!(error.unwrap().contains(&missing), "with the reason");
    assert_eq!(relay.health().failed, 1);
    relay.stop();
    running.await.unwrap();
    s.finish().await;
}

/// A row refused for good is set aside, not a wall: later rows of its own key are sent
/// too; health is not ready while it waits for an operator, who lists it (with its key
/// and reason) and, once the cause is fixed (here: the exchange created), sends it again.
#[tokio::test]
async fn a_refused_row_does_not_stop_its_key_and_an_operator_can_retry_it() {
    let s = setup(None, "T_PG_ORDER").await;
    let missing = unique("x-pg-missing");
    let mut tx = s.pool.begin().await.unwrap();
    let refused = s
        .outbox
        .publish(
            &mut tx,
            OutboxMessage::new(&missing, "T_PG_ORDER", &json!({"order_id": 1}))
                .unwrap()
                .ordering_key("k1"),
        )
        .await
        .unwrap();
    s.outbox
        .publish(
            &mut tx,
            OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 2}))
                .unwrap()
                .routing_key(&s.queue)
                .ordering_key("k1"),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let relay = s.relay(RelayConfig::default().poll_interval(Duration::from_millis(200)));
    let running = spawn_relay(&relay);
    wait_until!(WAIT, s.effects().await.0 >= 1);
    assert_eq!(s.effects().await, (1, 1), "the later row of key k1 went");
    wait_until!(WAIT, relay.health().failed_rows == 1);
    let health = relay.health();
    assert!(health.running && !health.is_ready(), "{health:?}");
    let failed = s.outbox.failed(&s.pool, 10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].message_id, refused);
    assert_eq!(failed[0].ordering_key.as_deref(), Some("k1"));
    assert!(failed[0].error.as_deref().unwrap().contains(&missing));
    // The cause fixed: the exchange exists and routes to the queue.
    let (_c, ch) = raw_channel().await;
    ch.exchange_declare(
        missing.as_str().into(),
        lapin::ExchangeKind::Fanout,
        lapin::options::ExchangeDeclareOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_bind(
        s.queue.as_str().into(),
        missing.as_str().into(),
        "".into(),
        lapin::options::QueueBindOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    assert_eq!(s.outbox.retry_failed(&s.pool, &[]).await.unwrap(), 1);
    wait_until!(WAIT, s.effects().await.0 >= 2);
    assert_eq!(s.effects().await, (2, 2), "the retried row went");
    assert!(s.outbox.failed(&s.pool, 10).await.unwrap().is_empty());
    wait_until!(WAIT, relay.health().is_ready());
    relay.stop();
    running.await.unwrap();
    s.finish().await;
    cleanup(&[], &[&missing]).await;
}

/// Rows the broker nacks (the target queue full, `reject-publish`, as during a quorum
/// leader change) are weather: tried again with backoff, never marked failed, health not
/// healthy meanwhile; once the queue takes messages every row goes, each key's rows in
/// commit order on the wire. (Before, every nacked row was marked failed for good and
/// its key stopped.)
#[tokio::test]
async fn nacked_rows_are_retried_in_key_order_until_the_broker_takes_them() {
    const ROWS: i64 = 200;
    const KEYS: i64 = 10;
    let s = setup(None, "T_PG_ORDER").await;
    let target = unique("q-pg-full");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &target, true).await;
    let refusing = Refusing::queues(&exactly(&target));
    commit_keyed(&s, &target, ROWS, KEYS).await;
    let events = deps(Config::default().with_publish_timeout(Duration::from_millis(300)))
        .await
        .0;
    let relay = Relay::new(
        s.pool.clone(),
        events,
        RelayConfig::default()
            .schema(&s.schema)
            .max_backoff(Duration::from_millis(400))
            // More workers than some keys fill: rounds that take nothing happen often.
            .workers(8),
    )
    .unwrap();
    let running = spawn_relay(&relay);
    wait_until!(WAIT, relay.health().retrying_rows > 0);
    // Once the head row of every key was tried (the rows behind a key's head wait for
    // it), health says not healthy through every later round (rounds that take nothing
    // because every head is backed off included) until rows go.
    let heads_tried = |times: i64| {
        let sql = format!(
            "SELECT count(*) FROM {}.eventrabbit_outbox WHERE sent_at IS NULL AND attempts >= {times}",
            s.schema
        );
        let pool = s.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&sql)
                .fetch_one(&pool)
                .await
                .unwrap()
                >= KEYS
        }
    };
    wait_until!(WAIT, heads_tried(1).await);
    assert!(heads_tried(1).await, "every key's head row tried");
    while !heads_tried(4).await {
        let health = relay.health();
        assert!(!health.healthy && health.failed_rows == 0, "{health:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(queue_len(&ch, &target).await, 0);
    refusing.lift();
    wait_until!(WAIT, queue_len(&ch, &target).await as i64 >= ROWS);
    let mut order = KeyOrder::default();
    while let Some(m) = get_message(&ch, &target, Duration::from_millis(300)).await {
        order.see(&m.delivery.data, KEYS);
    }
    assert_eq!(order.distinct(), ROWS, "every row sent");
    assert_eq!(relay.health().failed, 0, "none marked failed");
    relay.stop();
    running.await.unwrap();
    s.finish().await;
    cleanup(&[&target], &[]).await;
}

/// A relay draining a backlog in many small rounds into a queue that is full again and
/// again (`reject-publish`, a consumer slower than the relay): rows nacked in one round
/// hold their keys back in the next, so every row arrives once and each key's rows
/// arrive in commit order.
#[tokio::test]
async fn rounds_after_rounds_of_nacks_keep_each_keys_order() {
    const ROWS: i64 = 600;
    const KEYS: i64 = 6;
    let s = setup(None, "T_PG_ORDER").await;
    let target = unique("q-pg-flaky");
    let (_c, ch) = raw_channel().await;
    declare_refusing_queue(&ch, &target, 20).await;
    commit_keyed(&s, &target, ROWS, KEYS).await;
    // A consumer slower than the relay: the queue of 20 is full most of the time.
    let (_cc, cch) = raw_channel().await;
    cch.basic_qos(5, lapin::options::BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = cch
        .basic_consume(
            target.as_str().into(),
            "".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    let events = deps(Config::default().with_publish_timeout(Duration::from_millis(100)))
        .await
        .0;
    let relay = Relay::new(
        s.pool.clone(),
        events,
        RelayConfig::default()
            .schema(&s.schema)
            .batch_size(30)
            .max_backoff(Duration::from_millis(100)),
    )
    .unwrap();
    let running = spawn_relay(&relay);
    let mut order = KeyOrder::default();
    while order.distinct() < ROWS {
        let delivery = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut consumer))
            .await
            .unwrap_or_else(|_| {
                let got = order.distinct();
                panic!("rows stop after {got}: {:?}", relay.health())
            })
            .unwrap()
            .unwrap();
        order.see(&delivery.data, KEYS);
        tokio::time::sleep(Duration::from_millis(3)).await;
        delivery
            .ack(lapin::options::BasicAckOptions::default())
            .await
            .unwrap();
    }
    let retried: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.eventrabbit_outbox WHERE attempts > 0",
        s.schema
    ))
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert!(retried > 0, "the broker nacked some rows along the way");
    wait_until!(WAIT, relay.health().sent >= ROWS as u64);
    assert_eq!(relay.health().sent, ROWS as u64, "every row sent once");
    assert_eq!(relay.health().failed, 0, "none marked failed");
    relay.stop();
    running.await.unwrap();
    s.finish().await;
    cleanup(&[&target], &[]).await;
}

/// Poison in the outbox: a row that can never be sent (a header key over the 255 bytes
/// AMQP carries) does not panic the relay: it is marked failed with the reason naming
/// the header key, the rows behind it (its own key's too) go, and the relay keeps
/// running. (Before, it panicked the relay task, left the row unmarked, and every relay
/// started after took it and died again.)
#[tokio::test]
async fn a_poison_row_is_set_aside_and_the_relay_keeps_going() {
    let s = setup(None, "T_PG_ORDER").await;
    let mut tx = s.pool.begin().await.unwrap();
    let poison = s
        .outbox
        .publish(
            &mut tx,
            OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 1}))
                .unwrap()
                .routing_key(&s.queue)
                .ordering_key("k")
                .header("h".repeat(300), "v"),
        )
        .await
        .unwrap();
    for id in 2..=3 {
        s.outbox
            .publish(
                &mut tx,
                OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": id}))
                    .unwrap()
                    .routing_key(&s.queue)
                    .ordering_key("k"),
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    wait_until!(WAIT, s.effects().await.0 >= 2);
    assert_eq!(s.effects().await, (2, 2), "the rows behind it went");
    let (error, sent, failed) = s.outbox_row(&poison).await;
    assert!(failed && !sent, "marked failed");
    assert!(error.unwrap().contains("header key"), "with the reason");
    assert!(relay.health().running, "{:?}", relay.health());
    relay.stop();
    running.await.unwrap();
    assert!(!relay.health().running);
    s.finish().await;
}

/// Rows whose JSON PostgreSQL holds but serde cannot build a tree of (a number beyond
/// `f64`, nesting deeper than serde's 128 levels, in `data` or in `headers`) are sent as
/// written, and the rows behind them too. (Before, the relay decoded every row of a batch
/// into a `serde_json::Value`: one such row failed every round, and the relay sent nothing
/// again, retrying forever.)
#[tokio::test]
async fn rows_serde_cannot_read_back_are_sent_as_written() {
    let s = setup(None, "T_PG_ORDER").await;
    let ids = [s.order(1).await, s.order(2).await, s.order(3).await];
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (id, data, headers) in [
        (&ids[0], r#"{"order_id": 1, "big": 1e400}"#.to_owned(), None),
        (
            &ids[1],
            format!(r#"{{"order_id": 2, "deep": {deep}}}"#),
            None,
        ),
        (
            &ids[2],
            r#"{"order_id": 3}"#.to_owned(),
            Some(format!(r#"{{"h": "v", "n": 1e400, "d": {deep}}}"#)),
        ),
    ] {
        sqlx::query(&format!(
            "UPDATE {}.eventrabbit_outbox SET data = $2::jsonb, headers = $3::jsonb \
             WHERE message_id = $1",
            s.schema
        ))
        .bind(id)
        .bind(data)
        .bind(headers)
        .execute(&s.pool)
        .await
        .unwrap();
    }
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    wait_until!(WAIT, s.effects().await.0 >= 3);
    assert_eq!(s.effects().await, (3, 3), "every row went");
    for id in &ids {
        assert_eq!(
            s.outbox_row(id).await,
            (None, true, false),
            "{id} marked sent"
        );
    }
    assert!(relay.health().healthy, "{:?}", relay.health());
    relay.stop();
    running.await.unwrap();
    s.finish().await;
}

/// A relay whose task ended without returning (aborted, or dropped) says it is not running.
#[tokio::test]
async fn a_relay_whose_task_ended_is_not_running() {
    let s = setup(None, "T_PG_ORDER").await;
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    wait_until!(WAIT, relay.health().running);
    running.abort();
    let _ = running.await;
    assert!(!relay.health().running, "{:?}", relay.health());
    s.finish().await;
}

/// With `give_up_after`, a row the broker keeps refusing for now is marked failed once
/// that long has passed since its commit, saying so.
#[tokio::test]
async fn a_row_not_taken_within_give_up_after_is_marked_failed() {
    let s = setup(None, "T_PG_ORDER").await;
    let target = unique("q-pg-never");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &target, true).await;
    let _refusing = Refusing::queues(&exactly(&target));
    let mut tx = s.pool.begin().await.unwrap();
    let id = s
        .outbox
        .publish(
            &mut tx,
            OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 1}))
                .unwrap()
                .routing_key(&target),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let events = deps(Config::default().with_publish_timeout(Duration::from_millis(300)))
        .await
        .0;
    let relay = Relay::new(
        s.pool.clone(),
        events,
        RelayConfig::default()
            .schema(&s.schema)
            .max_backoff(Duration::from_millis(300))
            .give_up_after(Some(Duration::from_secs(2))),
    )
    .unwrap();
    let running = spawn_relay(&relay);
    wait_until!(WAIT, s.outbox_row(&id).await.2);
    let (error, sent, failed) = s.outbox_row(&id).await;
    assert!(failed && !sent);
    assert!(error.unwrap().contains("not taken by the broker within"));
    relay.stop();
    running.await.unwrap();
    s.finish().await;
    cleanup(&[&target], &[]).await;
}

/// While the database is unreachable the relay retries with backoff and says so in its
/// health; once it is back, the rows go.
#[tokio::test]
async fn an_unreachable_database_is_retried_and_reported() {
    let s = setup(None, "T_PG_ORDER").await;
    let proxy = Proxy::start_to("127.0.0.1:5432".into()).await;
    let db_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/eventrabbit_test".into());
    let through_proxy = db_url.replacen(":5432/", &format!(":{}/", proxy.port()), 1);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&through_proxy)
        .unwrap();
    let relay = Relay::new(
        pool,
        s.events.clone(),
        RelayConfig::default()
            .schema(&s.schema)
            .max_backoff(Duration::from_millis(500)),
    )
    .unwrap();
    proxy.refuse(true);
    let running = spawn_relay(&relay);
    wait_until!(WAIT, relay.health().last_error.is_some());
    let health = relay.health();
    assert!(health.running && !health.healthy, "{health:?}");
    s.order(11).await; // written directly, while the relay cannot reach the database
    proxy.refuse(false);
    wait_until!(WAIT, s.effects().await.0 == 1);
    assert_eq!(s.effects().await.0, 1, "sent once the database is back");
    wait_until!(WAIT, relay.health().healthy);
    assert!(relay.health().healthy);
    relay.stop();
    running.await.unwrap();
    s.finish().await;
}

/// A relay process killed (`kill -9`) after publishing a batch and before marking it
/// sent: the next relay sends those rows again (duplicates on the wire, with the same
/// message ids), and the inbox makes each order's effect happen exactly once.
#[tokio::test]
async fn a_relay_killed_between_publish_and_mark_makes_duplicates_the_inbox_absorbs() {
    const N: i64 = 2_000;
    let s = setup(None, "T_PG_ORDER").await;
    let mut tx = s.pool.begin().await.unwrap();
    for id in 0..N {
        s.outbox
            .publish(
                &mut tx,
                OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": id}))
                    .unwrap()
                    .routing_key(&s.queue),
            )
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
    // One batch of all of them: it is marked only after every one is confirmed.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_outbox_relay"))
        .arg(&s.schema)
        .arg(N.to_string())
        .kill_on_drop(true)
        .spawn()
        .expect("the relay process starts");
    wait_until!(WAIT, deliveries(&s.queue).0 >= 1);
    child.kill().await.expect("kill -9");
    let sent_before: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {}.eventrabbit_outbox WHERE sent_at IS NOT NULL",
        s.schema
    ))
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(sent_before, 0, "killed before marking anything sent");
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    wait_until!(Duration::from_secs(60), s.effects().await.0 >= N);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (effects, distinct_orders) = s.effects().await;
    let (distinct, duplicates) = deliveries(&s.queue);
    println!(
        "outbox kill -9 test: {distinct} distinct messages, {duplicates} duplicates on the wire, {effects} effects"
    );
    assert!(duplicates >= 1, "the killed relay's sends came again");
    assert_eq!(
        (effects, distinct_orders),
        (N, N),
        "exactly one effect per order"
    );
    relay.stop();
    running.await.unwrap();
    s.finish().await;
}

/// 10,000 orders, each written with its event in one transaction, consumed by an inbox
/// handler writing a row per event, while every AMQP connection is cut three times:
/// exactly 10,000 rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_orders_through_three_connection_cuts_make_ten_thousand_rows() {
    const N: i64 = 10_000;
    let proxy = Proxy::start().await;
    let s = setup(Some(&proxy.url()), "T_PG_ORDER").await;
    let relay = s.relay(RelayConfig::default());
    let running = spawn_relay(&relay);
    let writing = {
        let pool = s.pool.clone();
        let outbox = s.outbox.clone();
        let queue = s.queue.clone();
        tokio::spawn(async move {
            for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
                let writes = chunk.iter().map(|id| {
                    let (pool, outbox, queue) = (pool.clone(), outbox.clone(), queue.clone());
                    async move {
                        let mut tx = pool.begin().await.unwrap();
                        sqlx::query("SELECT 1").execute(&mut *tx).await.unwrap();
                        outbox
                            .publish(
                                &mut tx,
                                OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": id}))
                                    .unwrap()
                                    .routing_key(&queue),
                            )
                            .await
                            .unwrap();
                        tx.commit().await.unwrap();
                    }
                });
                futures_util::future::join_all(writes).await;
            }
        })
    };
    for cut in 1..=3 {
        wait_until!(WAIT, s.effects().await.0 >= cut * N / 4);
        proxy.cut_existing();
    }
    writing.await.unwrap();
    wait_until!(Duration::from_secs(120), s.effects().await.0 >= N);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (effects, distinct_orders) = s.effects().await;
    let (distinct, duplicates) = deliveries(&s.queue);
    println!(
        "outbox end-to-end: {effects} effect rows, {distinct} distinct messages, {duplicates} duplicates absorbed, {} AMQP connections",
        s.events.connections_opened()
    );
    assert!(
        s.events.connections_opened() >= 4,
        "the connections were cut"
    );
    assert_eq!((effects, distinct_orders), (N, N), "exactly 10,000 rows");
    relay.stop();
    running.await.unwrap();
    s.finish().await;
}

/// Two relays on one outbox at once: each row is sent by one of them, never both.
#[tokio::test]
async fn two_relays_at_once_send_no_row_twice() {
    const N: i64 = 2_000;
    let s = setup(None, "T_PG_ORDER").await;
    let config = RelayConfig::default().batch_size(100);
    let (a, b) = (s.relay(config.clone()), s.relay(config));
    let (ra, rb) = (spawn_relay(&a), spawn_relay(&b));
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let mut tx = s.pool.begin().await.unwrap();
        for id in chunk {
            s.outbox
                .publish(
                    &mut tx,
                    OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": id}))
                        .unwrap()
                        .routing_key(&s.queue),
                )
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
    }
    wait_until!(
        Duration::from_secs(60),
        deliveries(&s.queue).0 >= N as usize
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (distinct, duplicates) = deliveries(&s.queue);
    let (sent_a, sent_b) = (a.health().sent, b.health().sent);
    println!("two relays: {sent_a} + {sent_b} sent, {distinct} distinct, {duplicates} duplicates");
    assert_eq!((distinct, duplicates), (N as usize, 0), "no row sent twice");
    assert_eq!(sent_a + sent_b, N as u64);
    a.stop();
    b.stop();
    ra.await.unwrap();
    rb.await.unwrap();
    s.finish().await;
}

/// An RPC request handled through the inbox and sent twice (a redelivery) runs its
/// effect once, and the repeat is answered with the stored reply.
#[tokio::test]
async fn a_repeated_rpc_request_is_answered_from_the_stored_reply() {
    let s = setup(None, "T_PG_RESERVE").await;
    let (_c, ch) = raw_channel().await;
    let replies = unique("q-pg-replies");
    declare_queue(&ch, &replies, false).await;
    let props = BasicProperties::default()
        .with_reply_to(replies.as_str().into())
        .with_correlation_id("c1".into())
        .with_message_id("reserve-1".into());
    let body = br#"{"action":"T_PG_RESERVE","data":{"item":"book"}}"#;
    publish_raw(&ch, "", &s.queue, body, props.clone()).await;
    let first = get_message(&ch, &replies, WAIT).await.expect("a reply");
    publish_raw(&ch, "", &s.queue, body, props).await;
    let second = get_message(&ch, &replies, WAIT)
        .await
        .expect("a second reply");
    let (first, second): (Value, Value) = (
        serde_json::from_slice(&first.delivery.data).unwrap(),
        serde_json::from_slice(&second.delivery.data).unwrap(),
    );
    assert_eq!(first, second, "the same answer");
    assert!(first["data"]["reservation"].is_string(), "{first}");
    assert_eq!(s.effects().await.0, 1, "one effect");
    s.finish().await;
    cleanup(&[&replies], &[]).await;
}

/// Several relays draining a backlog of keyed rows at once (a key's rows go out a batch
/// at a time): every row is sent once, and each key's rows arrive in commit order, also
/// when one key holds most of the backlog.
#[tokio::test]
async fn relays_draining_a_keyed_backlog_together_keep_each_keys_order() {
    const ROWS: i64 = 3_000;
    let s = setup(None, "T_PG_ORDER").await;
    let target = unique("q-pg-backlog");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &target, true).await;
    // Key 0 takes half the rows; keys 1..=4 share the rest.
    let key = |n: i64| if n % 2 == 0 { 0 } else { 1 + n % 4 };
    for chunk in (0..ROWS).collect::<Vec<_>>().chunks(500) {
        let mut tx = s.pool.begin().await.unwrap();
        for &n in chunk {
            let message = OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": n}))
                .unwrap()
                .routing_key(&target)
                .ordering_key(format!("k{}", key(n)));
            s.outbox.publish(&mut tx, message).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let config = RelayConfig::default().batch_size(100);
    let relays: Vec<Relay> = (0..3).map(|_| s.relay(config.clone())).collect();
    let running: Vec<_> = relays.iter().map(spawn_relay).collect();
    wait_until!(
        Duration::from_secs(60),
        relays.iter().map(|r| r.health().sent).sum::<u64>() >= ROWS as u64
    );
    let mut last: HashMap<i64, i64> = HashMap::new();
    let mut got = 0;
    while let Some(m) = get_message(&ch, &target, Duration::from_millis(300)).await {
        let v: Value = serde_json::from_slice(&m.delivery.data).unwrap();
        let n = v["data"]["order_id"].as_i64().unwrap();
        if let Some(before) = last.insert(key(n), n) {
            assert!(before < n, "key k{}: {n} after {before}", key(n));
        }
        got += 1;
    }
    let sent: Vec<u64> = relays.iter().map(|r| r.health().sent).collect();
    assert_eq!(got, ROWS, "every row sent once (by relay: {sent:?})");
    for relay in &relays {
        relay.stop();
    }
    for r in running {
        r.await.unwrap();
    }
    s.finish().await;
    cleanup(&[&target], &[]).await;
}

/// A schema name as long as PostgreSQL allows (63 bytes): the outbox's commit notifies its
/// relays on a channel name PostgreSQL takes, and the relay sends the row. (Before, every
/// publish into such a schema failed: "channel name too long".)
#[tokio::test]
async fn an_outbox_in_a_schema_of_63_bytes_publishes() {
    let pool = pg_pool().await;
    let schema = format!("s{}", uuid::Uuid::new_v4().simple()) + &"x".repeat(30);
    assert_eq!(schema.len(), 63);
    eventrabbit_postgres::migrate(&pool, &schema).await.unwrap();
    let target = unique("q-pg-long-schema");
    let (_c, ch) = raw_channel().await;
    declare_queue(&ch, &target, true).await;
    let outbox = Outbox::new(&schema).unwrap();
    let mut tx = pool.begin().await.unwrap();
    let message = OutboxMessage::new("", "T_PG_ORDER", &json!({"order_id": 1}))
        .unwrap()
        .routing_key(&target);
    let id = outbox
        .publish(&mut tx, message)
        .await
        .expect("published into the outbox");
    tx.commit().await.unwrap();
    let (events, _handle) = deps(Config::default()).await;
    let relay = Relay::new(pool.clone(), events, RelayConfig::default().schema(&schema)).unwrap();
    let running = spawn_relay(&relay);
    let got = get_message(&ch, &target, WAIT).await.expect("sent");
    assert_eq!(
        got.delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str()),
        Some(id.as_str())
    );
    relay.stop();
    running.await.unwrap();
    drop_schema(&pool, &schema).await;
    cleanup(&[&target], &[]).await;
}

/// A batch claims its messages in one transaction: the ids handled before are left out,
/// the new ones commit with the batch's writes, and a batch rolled back claims nothing
/// (its ids are new again next time).
#[tokio::test]
async fn a_batch_claims_its_new_messages_in_one_transaction() {
    let pool = pg_pool().await;
    let schema = pg_schema(&pool).await;
    let inbox = Inbox::new(pool.clone(), &schema, "batch").unwrap();
    let first = inbox.begin_batch(["a", "b", "c"]).await.unwrap();
    assert_eq!(first.new_ids(), ["a", "b", "c"]);
    first.commit().await.unwrap();
    let second = inbox.begin_batch(["b", "d", "c", "e", "d"]).await.unwrap();
    assert_eq!(
        second.new_ids(),
        ["d", "e"],
        "handled before: left out; a repeat: once"
    );
    assert!(second.is_new("d") && !second.is_new("b"));
    drop(second); // rolled back
    assert!(!inbox.contains("d").await.unwrap());
    let mut third = inbox.begin_batch(["d", "e"]).await.unwrap();
    assert_eq!(
        third.new_ids(),
        ["d", "e"],
        "a rolled-back batch claimed nothing"
    );
    sqlx::query("SELECT 1").execute(&mut *third).await.unwrap();
    third.commit().await.unwrap();
    assert!(inbox.contains("e").await.unwrap());
    drop_schema(&pool, &schema).await;
}

/// What the batch handler with contexts wrote to.
struct BatchDb {
    inbox: Inbox,
    table: String,
}

#[derive(serde::Deserialize)]
struct Reading {
    value: i64,
}

/// A batch handler taking each message's context claims its batch by message id with
/// `Inbox::begin_batch` and writes only the new ones.
#[consumer(action = "T_PG_BATCH_CTX", batch(max = 50, window = "50ms"))]
async fn readings(
    items: Vec<Reading>,
    ctxs: Vec<MessageContext>,
    db: eventrabbit::State<BatchDb>,
) -> Result<(), eventrabbit_postgres::Error> {
    let ids: Vec<&str> = ctxs
        .iter()
        .map(|c| c.message_id().unwrap_or_default())
        .collect();
    let mut claim = db.inbox.begin_batch(&ids).await?;
    for (item, id) in items.iter().zip(&ids) {
        if claim.is_new(id) {
            sqlx::query(&format!(
                "INSERT INTO {} (id, value) VALUES ($1, $2)",
                db.table
            ))
            .bind(id)
            .bind(item.value)
            .execute(&mut *claim)
            .await?;
        }
    }
    claim.commit().await
}

/// 60 deliveries of 40 messages (20 sent twice, the second time in later batches) reach
/// a batch handler with their contexts: each message is written once, by its own id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_claims_its_batch_by_the_message_ids_of_its_contexts() {
    let pool = pg_pool().await;
    let schema = pg_schema(&pool).await;
    let table = format!("{schema}.readings");
    sqlx::query(&format!(
        "CREATE TABLE {table} (id TEXT PRIMARY KEY, value BIGINT NOT NULL)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let db = BatchDb {
        inbox: Inbox::new(pool.clone(), &schema, "readings").unwrap(),
        table: table.clone(),
    };
    let queue = unique("q-pg-batch-ctx");
    let (_events, handle) = deps(Config::default().with_state(db)).await;
    let task = start(
        &handle,
        ConsumeChannel::new(&queue)
            .actions(["T_PG_BATCH_CTX"])
            .prefetch(100),
    )
    .await;
    let (_c, ch) = raw_channel().await;
    let sends = (0..40).chain(0..20);
    for n in sends {
        let body =
            serde_json::to_vec(&json!({"action": "T_PG_BATCH_CTX", "data": {"value": n}})).unwrap();
        let props = BasicProperties::default().with_message_id(format!("reading-{n}").into());
        publish_raw(&ch, "", &queue, &body, props).await;
    }
    let count = || async {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    wait_until!(
        Duration::from_secs(30),
        count().await == 40 && unacked(&queue) == 0 && queue_len(&ch, &queue).await == 0
    );
    assert_eq!(count().await, 40, "each message written once");
    let sum: i64 = sqlx::query_scalar(&format!("SELECT sum(value)::bigint FROM {table}"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        sum,
        (0..40).sum::<i64>(),
        "each row holds its own message's data"
    );
    handle.shutdown().await;
    task.await.unwrap().unwrap();
    drop_schema(&pool, &schema).await;
    cleanup(&[&queue], &[]).await;
}
