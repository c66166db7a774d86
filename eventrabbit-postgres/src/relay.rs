//! The relay: sends committed outbox rows to RabbitMQ with publisher confirms, marks them
//! sent, and cleans up.
//!
//! Each round takes a batch of due rows with `FOR UPDATE SKIP LOCKED` (so several relays
//! share the work without sending a row twice), publishes them (rows of one ordering key
//! one after another, in id order, which the writers made commit order; other rows
//! concurrently), and in the same transaction marks each sent, failed, or to be tried
//! again. A relay that dies between publishing and committing leaves its rows unmarked:
//! they are sent again (a duplicate on the wire, with the same `message_id`, which an
//! [`Inbox`](crate::Inbox) absorbs).

use crate::error::Result;
use crate::schema::Schema;
use eventrabbit::{Events, PublishOptions};
use futures_util::FutureExt;
use futures_util::future::join_all;
use parking_lot::Mutex;
use serde_json::value::RawValue;
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, Row, Transaction};
use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How often a relay counts the failed and retrying rows for its health.
const COUNT_EVERY: Duration = Duration::from_secs(5);

/// The counter of outbox rows marked failed for good, by exchange.
pub const FAILED_METRIC: &str = "eventrabbit_outbox_failed_total";

/// Sets a flag back to false when dropped.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// How a relay works.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    schema: String,
    batch_size: i64,
    poll_interval: Duration,
    retention: Duration,
    max_backoff: Duration,
    give_up_after: Option<Duration>,
    workers: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            schema: "public".to_owned(),
            batch_size: 2000,
            poll_interval: Duration::from_secs(1),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_backoff: Duration::from_secs(30),
            give_up_after: None,
            workers: 2,
        }
    }
}

impl RelayConfig {
    /// The schema the outbox lives in (`public` by default).
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// Rows taken per round (2,000 by default).
    #[must_use]
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        self
    }

    /// How often the outbox is looked at when no notification wakes the relay (1 s by
    /// default; a commit wakes it at once through `LISTEN`/`NOTIFY`).
    #[must_use]
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long sent rows are kept before they are deleted (7 days by default).
    #[must_use]
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// The longest wait before a row whose send failed for a passing reason (the broker
    /// away, a nack while a quorum queue elects a leader, a full queue refusing publishes)
    /// is tried again, and between rounds while the database is away (30 s).
    #[must_use]
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.max_backoff = max;
        self
    }

    /// How many rounds run at once (2 by default): while one publishes its batch, another
    /// takes the next from the database. Each takes its own share of the keys (and of the
    /// rows without a key) and holds its own `LISTEN` connection.
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Marks a row failed once it has been tried for this long, measured from its commit,
    /// without the broker taking it (`None`, the default: a committed event is tried until
    /// it is sent, however long the broker is in trouble; health says so meanwhile).
    #[must_use]
    pub fn give_up_after(mut self, deadline: Option<Duration>) -> Self {
        self.give_up_after = deadline;
        self
    }
}

/// What a relay reports about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayHealth {
    /// Whether its loop runs (`false` once [`Relay::run`] returned, panicked or was
    /// dropped).
    pub running: bool,
    /// Whether its last round reached the database and the broker, and sent every row it
    /// took (a row the broker did not take for now makes it `false` until one does).
    pub healthy: bool,
    /// Rows sent (confirmed by RabbitMQ) so far.
    pub sent: u64,
    /// Rows this relay marked failed for good so far.
    pub failed: u64,
    /// Rows of the outbox marked failed and not retried yet (by any relay), as last
    /// counted; see [`Outbox::failed`](crate::Outbox::failed).
    pub failed_rows: u64,
    /// Rows waiting for a retry after the broker did not take them (nacked, the broker
    /// away), as last counted.
    pub retrying_rows: u64,
    /// What last went wrong, if anything did.
    pub last_error: Option<String>,
}

impl RelayHealth {
    /// Ready: running, healthy, and no row failed for good waiting for an operator.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.running && self.healthy && self.failed_rows == 0
    }
}

/// How a worker's round went, for health.
enum Round {
    /// It took no row (none due).
    Empty,
    /// It sent what it took; the error of a row the broker did not take for now, if any.
    Sent(Option<String>),
    /// It failed (the database or the broker away).
    Failed(String),
}

#[derive(Debug, Default)]
struct State {
    /// Whether any round finished yet.
    reported: bool,
    /// Workers whose last round failed (the database or the broker away).
    failing: BTreeSet<i64>,
    /// Workers holding rows the broker did not take for now, until one of their rounds
    /// sends every row it took (rounds that take nothing, every row backed off, leave it).
    holding: BTreeSet<i64>,
    last_error: Option<String>,
    failed_rows: u64,
    retrying_rows: u64,
}

#[derive(Debug)]
struct Inner {
    pool: PgPool,
    events: Events,
    schema: Schema,
    config: RelayConfig,
    running: AtomicBool,
    sent: AtomicU64,
    failed: AtomicU64,
    state: Mutex<State>,
    stop: Notify,
    stopped: AtomicBool,
}

/// Sends committed outbox rows to RabbitMQ. Cheap to clone; run it with
/// [`Relay::run`] (several relays, in one process or several, may run at once).
#[derive(Debug, Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

/// One outbox row being sent.
#[derive(Debug)]
struct OutboxRow {
    id: i64,
    message_id: String,
    exchange: String,
    routing_key: String,
    action: String,
    /// The event's JSON as PostgreSQL wrote it out: put into the envelope as it is,
    /// without building a tree of it (so a number or a depth serde cannot read back is
    /// sent as written, not refused).
    data: Result<Box<RawValue>, String>,
    /// The string entries of its headers (others are not sent).
    headers: Vec<(String, String)>,
    ordering_key: Option<String>,
    attempts: i32,
    /// How long ago it was committed.
    age: Duration,
}

/// JSON as PostgreSQL writes `jsonb` out (`{"a": 1, "b": [1, 2]}`) without the blanks
/// between its tokens, as serde writes it (`{"a":1,"b":[1,2]}`): a relayed event has the
/// bytes of the same event published by a `#[producer]`. Blanks inside strings stay.
fn compact(mut json: String) -> String {
    let (mut in_string, mut escaped) = (false, false);
    json.retain(|c| {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            true
        } else {
            in_string = c == '"';
            !matches!(c, ' ' | '\t' | '\n' | '\r')
        }
    });
    json
}

/// The entries of a row's `headers` (a JSON object, as text) whose values are strings, in
/// key order; nothing for a missing or unreadable one (never an error: headers must not
/// stop a row, let alone a round).
fn string_headers(text: Option<String>) -> Vec<(String, String)> {
    let Some(text) = text else {
        return Vec::new();
    };
    let Ok(entries) = serde_json::from_str::<BTreeMap<String, Box<RawValue>>>(&text) else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter_map(|(k, v)| Some((k, serde_json::from_str::<String>(v.get()).ok()?)))
        .collect()
}

/// The rows one worker of a relay takes: those of the keys (and, without a key, the ids)
/// whose hash is `index` modulo `of`, so that its workers never hold back one another's
/// keys (one key is always one worker's).
#[derive(Debug, Clone, Copy)]
struct Share {
    index: i64,
    of: i64,
}

impl Share {
    const ALL: Share = Share { index: 0, of: 1 };
}

/// What became of a row.
#[derive(Debug)]
enum Outcome {
    Sent,
    /// Refused for good: marked failed.
    Failed(String),
    /// A passing failure: tried again later.
    Later(String),
    /// Not tried: an earlier row of its key did not go.
    Skipped,
}

impl Relay {
    /// A relay sending the outbox of `config`'s schema through `events`.
    pub fn new(pool: PgPool, events: Events, config: RelayConfig) -> Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner {
                schema: Schema::new(&config.schema)?,
                pool,
                events,
                config,
                running: AtomicBool::new(false),
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                state: Mutex::default(),
                stop: Notify::new(),
                stopped: AtomicBool::new(false),
            }),
        })
    }

    /// How the relay is doing.
    #[must_use]
    pub fn health(&self) -> RelayHealth {
        let state = self.inner.state.lock();
        RelayHealth {
            running: self.inner.running.load(Ordering::SeqCst),
            healthy: state.reported && state.failing.is_empty() && state.holding.is_empty(),
            sent: self.inner.sent.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            failed_rows: state.failed_rows,
            retrying_rows: state.retrying_rows,
            last_error: state.last_error.clone(),
        }
    }

    /// Makes [`Relay::run`] return after its current round.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Ordering::SeqCst);
        self.inner.stop.notify_waiters();
    }

    /// Sends committed rows until [`Relay::stop`]: woken by each commit (`LISTEN`), by
    /// the poll interval, and when a scheduled row falls due; the database or the broker
    /// being away is retried with backoff and reported in [`Relay::health`].
    pub async fn run(&self) {
        let inner = &self.inner;
        inner.running.store(true, Ordering::SeqCst);
        // `running` goes back to false however the loop ends: returned, panicked, dropped.
        let _running = Running(&inner.running);
        // Rounds overlap: while one publishes its batch, another takes and marks the next
        // in the database (they share the work as separate relays do).
        let of = i64::try_from(inner.config.workers).unwrap_or(1);
        join_all((0..of).map(|index| self.work(Share { index, of }))).await;
    }

    /// One loop of rounds over `share` of the rows; the first also counts rows for health
    /// and cleans up.
    async fn work(&self, share: Share) {
        let inner = &self.inner;
        let lead = share.index == 0;
        let mut listener: Option<PgListener> = None;
        let mut backoff = Duration::from_millis(100);
        let mut last_cleanup = tokio::time::Instant::now();
        let mut last_count: Option<tokio::time::Instant> = None;
        while !inner.stopped.load(Ordering::SeqCst) {
            if listener.is_none() {
                listener = self.listen().await;
            }
            match self.round(share).await {
                Ok(n) => {
                    backoff = Duration::from_millis(100);
                    if n as i64 >= inner.config.batch_size {
                        continue; // more waiting: no pause
                    }
                }
                Err(e) => {
                    self.report(share, Round::Failed(e.to_string()));
                    tracing::warn!(error = %e, ?backoff, "outbox relay round failed; retrying");
                    listener = None;
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(inner.config.max_backoff);
                    continue;
                }
            }
            if lead && last_count.is_none_or(|at| at.elapsed() >= COUNT_EVERY) {
                last_count = Some(tokio::time::Instant::now());
                self.count_rows().await;
            }
            if lead && last_cleanup.elapsed() >= Duration::from_secs(60) {
                last_cleanup = tokio::time::Instant::now();
                if let Err(e) = self.clean_up().await {
                    tracing::warn!(error = %e, "outbox clean-up failed");
                }
            }
            let wait = self.next_due().await.unwrap_or(inner.config.poll_interval);
            let wait = wait.min(inner.config.poll_interval);
            match listener.as_mut() {
                Some(l) => {
                    tokio::select! {
                        notified = l.recv() => if notified.is_err() { listener = None },
                        () = tokio::time::sleep(wait) => {}
                        () = inner.stop.notified() => {}
                    }
                }
                None => self.pause(wait).await,
            }
        }
    }

    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = tokio::time::sleep(d) => {}
            () = self.inner.stop.notified() => {}
        }
    }

    async fn listen(&self) -> Option<PgListener> {
        let mut listener = PgListener::connect_with(&self.inner.pool).await.ok()?;
        listener.listen(&self.inner.schema.channel()).await.ok()?;
        Some(listener)
    }

    /// Counts the rows failed for good and those waiting for a retry, for health.
    async fn count_rows(&self) {
        let sql = self.inner.schema.sql(
            "SELECT count(*) FILTER (WHERE failed_at IS NOT NULL), \
                    count(*) FILTER (WHERE failed_at IS NULL AND attempts > 0) \
             FROM {schema}.eventrabbit_outbox WHERE sent_at IS NULL",
        );
        let counted: std::result::Result<(i64, i64), _> =
            sqlx::query_as(&sql).fetch_one(&self.inner.pool).await;
        if let Ok((failed, retrying)) = counted {
            let mut state = self.inner.state.lock();
            state.failed_rows = u64::try_from(failed).unwrap_or(0);
            state.retrying_rows = u64::try_from(retrying).unwrap_or(0);
        }
    }

    fn report(&self, share: Share, round: Round) {
        let mut state = self.inner.state.lock();
        state.reported = true;
        let worker = share.index;
        if let Round::Failed(_) = round {
            state.failing.insert(worker);
        } else {
            state.failing.remove(&worker);
        }
        match round {
            Round::Empty => {}
            Round::Sent(None) => {
                state.holding.remove(&worker);
            }
            Round::Sent(Some(error)) => {
                state.holding.insert(worker);
                state.last_error = Some(error);
            }
            Round::Failed(error) => state.last_error = Some(error),
        }
    }

    /// How long until the earliest scheduled (or backed-off) row is due, if any is.
    async fn next_due(&self) -> Option<Duration> {
        let sql = self.inner.schema.sql(
            "SELECT EXTRACT(EPOCH FROM (MIN(GREATEST(publish_at, next_attempt_at)) - now()))::float8 \
             FROM {schema}.eventrabbit_outbox WHERE sent_at IS NULL AND failed_at IS NULL \
             AND (publish_at > now() OR next_attempt_at > now())",
        );
        let secs: Option<f64> = sqlx::query_scalar(&sql)
            .fetch_one(&self.inner.pool)
            .await
            .ok()?;
        secs.map(|s| Duration::from_secs_f64(s.max(0.001)))
    }

    /// One round: takes a batch of due rows, sends them, marks them. Returns how many
    /// rows it took.
    pub async fn run_once(&self) -> Result<usize> {
        self.round(Share::ALL).await
    }

    /// One round over `share` of the rows.
    async fn round(&self, share: Share) -> Result<usize> {
        let inner = &self.inner;
        let mut tx = inner.pool.begin().await?;
        let rows = self.take(&mut tx, share).await?;
        if rows.is_empty() {
            tx.commit().await?;
            self.report(share, Round::Empty);
            return Ok(0);
        }
        let outcomes = self.send(&rows).await;
        self.mark(&mut tx, &rows, &outcomes).await?;
        tx.commit().await?;
        let later = outcomes.iter().find_map(|o| match o {
            Outcome::Later(e) => Some(e.clone()),
            _ => None,
        });
        self.report(share, Round::Sent(later));
        Ok(rows.len())
    }

    async fn take(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        share: Share,
    ) -> Result<Vec<OutboxRow>> {
        // The batch: the oldest due rows of this worker's share nobody else is sending
        // (locked until this round commits).
        let sql = self.inner.schema.sql(
            "SELECT o.id, o.message_id, o.exchange, o.routing_key, o.action, o.data::text AS data, o.headers::text AS headers, \
                    o.ordering_key, o.attempts, \
                    EXTRACT(EPOCH FROM (now() - o.created_at))::float8 AS age \
             FROM {schema}.eventrabbit_outbox o \
             WHERE o.sent_at IS NULL AND o.failed_at IS NULL \
               AND (o.publish_at IS NULL OR o.publish_at <= now()) \
               AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()) \
               AND ($2 = 1 OR (CASE WHEN o.ordering_key IS NULL THEN o.id \
                    ELSE hashtext(o.ordering_key)::bigint & 2147483647 END) % $2 = $3) \
             ORDER BY o.id LIMIT $1 FOR UPDATE SKIP LOCKED",
        );
        let rows = sqlx::query(&sql)
            .bind(self.inner.config.batch_size)
            .bind(share.of)
            .bind(share.index)
            .fetch_all(&mut **tx)
            .await?;
        let rows: Vec<OutboxRow> = rows
            .into_iter()
            .map(|r| {
                Ok(OutboxRow {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    exchange: r.try_get("exchange")?,
                    routing_key: r.try_get("routing_key")?,
                    action: r.try_get("action")?,
                    data: RawValue::from_string(compact(r.try_get("data")?))
                        .map_err(|e| e.to_string()),
                    headers: string_headers(r.try_get("headers")?),
                    ordering_key: r.try_get("ordering_key")?,
                    attempts: r.try_get("attempts")?,
                    age: Duration::from_secs_f64(r.try_get::<f64, _>("age")?.max(0.0)),
                })
            })
            .collect::<Result<_>>()?;
        let blockers = self.blockers(tx, &rows).await?;
        Ok(rows
            .into_iter()
            .filter(|row| match &row.ordering_key {
                Some(key) => blockers.get(key).is_none_or(|first| row.id < *first),
                None => true,
            })
            .collect())
    }

    /// For each key of the batch, its first blocker: the oldest earlier row of the key
    /// still to send that is not in the batch (being sent by another relay, or waiting for
    /// its retry). It holds back the key's rows after it, so that a key's rows go out in
    /// id order; a key without one goes out a whole batch at a time, not a row per round.
    /// (One index range scan per key, driven by the batch's keys: the plan does not depend
    /// on the table's statistics.)
    async fn blockers(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[OutboxRow],
    ) -> Result<BTreeMap<String, i64>> {
        let mut last: BTreeMap<&str, i64> = BTreeMap::new();
        for row in rows {
            if let Some(key) = &row.ordering_key {
                last.insert(key, row.id);
            }
        }
        if last.is_empty() {
            return Ok(BTreeMap::new());
        }
        let (keys, lasts): (Vec<&str>, Vec<i64>) = last.into_iter().unzip();
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let sql = self.inner.schema.sql(
            "SELECT t.key, ( \
                 SELECT min(e.id) FROM {schema}.eventrabbit_outbox e \
                 WHERE e.ordering_key = t.key AND e.id < t.last \
                   AND e.sent_at IS NULL AND e.failed_at IS NULL \
                   AND (e.publish_at IS NULL OR e.publish_at <= now()) \
                   AND NOT (e.id = ANY($3))) AS first \
             FROM unnest($1::text[], $2::bigint[]) AS t(key, last)",
        );
        let found: Vec<(String, Option<i64>)> = sqlx::query_as(&sql)
            .bind(&keys)
            .bind(&lasts)
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
        Ok(found
            .into_iter()
            .filter_map(|(key, first)| first.map(|f| (key, f)))
            .collect())
    }

    /// Sends the rows: those of one key one after another (a row the broker did not take
    /// for now stops its key, to keep the order; a row refused for good is set aside and
    /// the key goes on), the rest concurrently.
    async fn send(&self, rows: &[OutboxRow]) -> Vec<Outcome> {
        let mut lanes: BTreeMap<Option<&str>, Vec<usize>> = BTreeMap::new();
        let mut solo = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            match row.ordering_key.as_deref() {
                Some(key) => lanes.entry(Some(key)).or_default().push(i),
                None => solo.push(vec![i]),
            }
        }
        let groups = lanes.into_values().chain(solo);
        let sent = join_all(groups.map(|group| async move {
            let mut outcomes = Vec::with_capacity(group.len());
            let mut blocked = false;
            for i in group {
                let outcome = if blocked {
                    Outcome::Skipped
                } else {
                    self.send_one(&rows[i]).await
                };
                blocked |= matches!(outcome, Outcome::Later(_));
                outcomes.push((i, outcome));
            }
            outcomes
        }))
        .await;
        let mut by_row: Vec<Option<Outcome>> = rows.iter().map(|_| None).collect();
        for (i, outcome) in sent.into_iter().flatten() {
            by_row[i] = Some(outcome);
        }
        by_row
            .into_iter()
            .map(|o| o.unwrap_or(Outcome::Skipped))
            .collect()
    }

    /// Sends one row. Weather (a nack, the broker away, a leader change) is tried again
    /// later; a refusal of this very row (no such exchange, a name or header key over 255
    /// bytes, too large) fails it for good; so does anything that panics while sending it
    /// (it can never be sent, and must not stop the rows behind it).
    async fn send_one(&self, row: &OutboxRow) -> Outcome {
        let data = match &row.data {
            Ok(data) => data,
            Err(e) => return Outcome::Failed(format!("its data does not read as JSON: {e}")),
        };
        let sending = AssertUnwindSafe(self.publish_row(row, data))
            .catch_unwind()
            .await;
        let published = match sending {
            Ok(published) => published,
            Err(panic) => {
                let text = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                return Outcome::Failed(format!("sending it panicked: {text}"));
            }
        };
        match published {
            Ok(()) => Outcome::Sent,
            Err(e) if e.is_retryable() => match self.inner.config.give_up_after {
                Some(deadline) if row.age >= deadline => Outcome::Failed(format!(
                    "not taken by the broker within {deadline:?} of its commit: {e}"
                )),
                _ => Outcome::Later(e.to_string()),
            },
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    async fn publish_row(&self, row: &OutboxRow, data: &RawValue) -> eventrabbit::Result<()> {
        let mut options = PublishOptions::new().message_id(&row.message_id);
        for (k, v) in &row.headers {
            options = options.header(k.as_str(), v.as_str());
        }
        self.inner
            .events
            .publish_with(&row.exchange, &row.routing_key, &row.action, data, &options)
            .await
    }

    async fn mark(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[OutboxRow],
        outcomes: &[Outcome],
    ) -> Result<()> {
        let schema = &self.inner.schema;
        let mut sent = Vec::new();
        for (row, outcome) in rows.iter().zip(outcomes) {
            match outcome {
                Outcome::Sent => sent.push(row.id),
                Outcome::Failed(error) => {
                    tracing::error!(
                        id = row.id,
                        message_id = %row.message_id,
                        ordering_key = row.ordering_key.as_deref().unwrap_or(""),
                        exchange = %row.exchange,
                        action = %row.action,
                        %error,
                        "outbox row refused for good: marked failed, later rows of its key go on; \
                         list with `eventrabbit outbox list`, send again with `eventrabbit outbox retry`"
                    );
                    self.inner.failed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(FAILED_METRIC, "exchange" => row.exchange.clone())
                        .increment(1);
                    sqlx::query(&schema.sql(
                        "UPDATE {schema}.eventrabbit_outbox SET failed_at = now(), last_error = $2, \
                         attempts = attempts + 1 WHERE id = $1",
                    ))
                    .bind(row.id)
                    .bind(error)
                    .execute(&mut **tx)
                    .await?;
                }
                Outcome::Later(error) => {
                    let secs = self.backoff(row.attempts).as_secs_f64();
                    sqlx::query(&schema.sql(
                        "UPDATE {schema}.eventrabbit_outbox SET attempts = attempts + 1, last_error = $2, \
                         next_attempt_at = now() + make_interval(secs => $3) WHERE id = $1",
                    ))
                    .bind(row.id)
                    .bind(error)
                    .bind(secs)
                    .execute(&mut **tx)
                    .await?;
                }
                Outcome::Skipped => {}
            }
        }
        if !sent.is_empty() {
            sqlx::query(
                &schema.sql(
                    "UPDATE {schema}.eventrabbit_outbox SET sent_at = now() WHERE id = ANY($1)",
                ),
            )
            .bind(&sent)
            .execute(&mut **tx)
            .await?;
            self.inner
                .sent
                .fetch_add(sent.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    fn backoff(&self, attempts: i32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.clamp(0, 16) as u32);
        (Duration::from_millis(200) * factor).min(self.inner.config.max_backoff)
    }

    /// Deletes sent rows older than the retention period.
    pub async fn clean_up(&self) -> Result<u64> {
        let secs = self.inner.config.retention.as_secs_f64();
        let done = sqlx::query(&self.inner.schema.sql(
            "DELETE FROM {schema}.eventrabbit_outbox \
             WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1)",
        ))
        .bind(secs)
        .execute(&self.inner.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compact_drops_the_blanks_between_tokens_and_keeps_those_in_strings() {
        let jsonb = r#"{"a": 1, "b": [1, {"c": "x y\" z"}], "d": "\\", "e": " "}"#;
        assert_eq!(
            compact(jsonb.to_owned()),
            r#"{"a":1,"b":[1,{"c":"x y\" z"}],"d":"\\","e":" "}"#
        );
    }
}
