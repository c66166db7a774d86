//! Order per key at scale: three instances of one service share a partitioned topology.
//!
//! Events of 100 accounts go to the consistent-hash exchange `partitions_example`, which
//! routes each account (the routing key) to one of 8 partition queues. Each instance (here
//! three in one process, each with its own connection, as three processes would have)
//! consumes the partitions it holds, one instance per partition, with the accounts of a
//! partition handled in parallel and each account's events one at a time. When the third
//! instance stops halfway, its partitions go to the other two.
//!
//! ```sh
//! cargo run --example partitions   # needs rabbitmq_consistent_hash_exchange; AMQP_ADDR picks the broker
//! ```

use eventrabbit::{
    Config, ConsumerState, Handle, Partitions, RetryConfig, State, build_event_dependencies,
    consumer,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const EXCHANGE: &str = "partitions_example";
const PARTITIONS: u16 = 8;
const ACCOUNTS: u64 = 100;
const PER_ACCOUNT: u64 = 100;

/// What every instance saw, in the order each handled it.
#[derive(Default)]
struct Seen {
    events: Mutex<Vec<(usize, String, u64)>>,
    changed: Notify,
}

/// One instance's state: its number and the shared record.
struct Instance {
    number: usize,
    seen: Arc<Seen>,
}

#[consumer(action = "ACCOUNT_EVENT")]
async fn account_event(account: String, seq: u64, me: State<Arc<Instance>>) {
    // Some work, of varying length.
    tokio::time::sleep(Duration::from_micros(fastrand::u64(..2_000))).await;
    me.seen
        .events
        .lock()
        .unwrap()
        .push((me.number, account, seq));
    me.seen.changed.notify_waiters();
}

fn partitions() -> Partitions {
    Partitions::new(EXCHANGE, PARTITIONS).configure(|channel| {
        channel.prefetch(32).retry(
            RetryConfig::default()
                .with_max_retries(3)
                .with_delay(Duration::from_millis(200)),
        )
    })
}

/// How many partitions `handle` consumes now.
async fn held(handle: &Handle) -> usize {
    let prefix = format!("{EXCHANGE}.p");
    let health = handle.health().await;
    health
        .consumers
        .iter()
        .filter(|c| c.queue.starts_with(&prefix) && c.state == ConsumerState::Running)
        .count()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("AMQP_ADDR")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let seen = Arc::new(Seen::default());
    let mut instances = Vec::new();
    for number in 1..=3 {
        let state = Arc::new(Instance {
            number,
            seen: seen.clone(),
        });
        let (events, handle) =
            build_event_dependencies(url.as_str(), Config::default().with_state(state)).await?;
        let consumer = handle.start_partitions(partitions()).await?;
        instances.push((events, handle, consumer));
    }
    // The instances spread the partitions among themselves (each takes its share as the
    // others hand theirs over); wait until every partition has its one instance.
    let fair = usize::from(PARTITIONS) / instances.len();
    loop {
        let mut holds = Vec::new();
        for (_, handle, _) in &instances {
            holds.push(held(handle).await);
        }
        if holds.iter().sum::<usize>() == usize::from(PARTITIONS)
            && holds.iter().all(|n| *n >= fair)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, (_, handle, _)) in instances.iter().enumerate() {
        println!("instance {} holds {} partitions", i + 1, held(handle).await);
    }

    let events = instances[0].0.clone();
    let total = ACCOUNTS * PER_ACCOUNT;
    for seq in 0..PER_ACCOUNT {
        if seq == PER_ACCOUNT / 2 {
            // Halfway, instance 3 stops: its partitions go to the others.
            let (_, handle, consumer) = instances.pop().expect("three instances");
            handle.shutdown().await;
            consumer.join().await?;
            println!(
                "instance 3 stopped after {} events were published",
                seq * ACCOUNTS
            );
        }
        for account in 0..ACCOUNTS {
            let account = format!("account-{account}");
            events
                .publish(
                    EXCHANGE,
                    &account,
                    "ACCOUNT_EVENT",
                    &json!({"account": account, "seq": seq}),
                )
                .await?;
        }
    }
    loop {
        let changed = seen.changed.notified();
        if seen.events.lock().unwrap().len() as u64 >= total {
            break;
        }
        if tokio::time::timeout(Duration::from_secs(30), changed)
            .await
            .is_err()
        {
            println!("not every event arrived within 30 s");
            break;
        }
    }

    let events = seen.events.lock().unwrap().clone();
    let mut per_account: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut per_instance: BTreeMap<usize, u64> = BTreeMap::new();
    for (instance, account, seq) in &events {
        per_account.entry(account).or_default().push(*seq);
        *per_instance.entry(*instance).or_default() += 1;
    }
    let in_order = per_account
        .values()
        .filter(|seqs| **seqs == (0..PER_ACCOUNT).collect::<Vec<_>>())
        .count();
    println!(
        "{} events handled; {in_order} of {ACCOUNTS} accounts got all {PER_ACCOUNT} of their events, in order",
        events.len()
    );
    for (instance, n) in &per_instance {
        println!("instance {instance} handled {n} events");
    }
    let ok = in_order as u64 == ACCOUNTS && events.len() as u64 == total;
    println!(
        "{}",
        if ok {
            "ok: every account's events arrived in order"
        } else {
            "NOT OK"
        }
    );
    for (_, handle, consumer) in instances {
        handle.shutdown().await;
        consumer.join().await?;
    }
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}
