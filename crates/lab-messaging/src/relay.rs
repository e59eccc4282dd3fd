//! The outbox relay: publishes committed outbox rows to RabbitMQ, at-least-once.
//!
//! One relay per service process. It wakes on the schema's `NOTIFY` (sent at commit by
//! [`outbox::enqueue`]) and also sweeps on a timer, since notifications are lost while its
//! listening connection is down. Each batch is one transaction: claim rows with `FOR UPDATE SKIP
//! LOCKED` and read the pause flag (share lock) in one statement, publish them in id order on a
//! confirm-mode channel, await every confirm, mark them sent, commit. A crash anywhere before the
//! commit leaves the rows pending, so they are published again; consumers dedupe by message id
//! (the inbox). A publish refused part-way marks the rows confirmed before it and leaves the rest
//! for the next round. On a broker or database failure it backs off and starts again with a fresh
//! channel.

use std::time::{Duration, Instant};

use chrono::Utc;
use futures::FutureExt;
use futures::future::join_all;
use lapin::Channel;
use lapin::options::BasicPublishOptions;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::outbox::{self, Pending};
use crate::topology::{CONFIRM_TIMEOUT, confirm_channel};
use crate::{Broker, MessagingError, MessagingMetrics, Topology};

/// After a failure the relay waits this long before trying again, doubling up to the maximum:
/// a lost channel recovers in one short wait, a broker restart (~10 s here) is polled every 5 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often the backlog gauges are refreshed (a count over the pending rows): often enough for
/// a 15 s Prometheus scrape and the admin page, rarely enough to cost nothing under load.
const GAUGES_EVERY: Duration = Duration::from_millis(500);
/// How often a relay deletes old published rows; any replica may, deleting twice is harmless.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// Opens a batch's transaction with its settings in the same round trip. Losing the batch's
/// commit in a crash only means publishing its rows again, which consumers absorb (inbox); not
/// waiting for its WAL flush saves one fsync per batch. The claim walks `lab_outbox_pending` in
/// id order as a plain index scan, whatever the statistics say: every row marked sent leaves a
/// dead entry in that index until a vacuum, and only a plain index scan marks the entries it
/// passes as dead so that the next claim skips them. The planner's own choice, after statistics
/// taken during a burst, is a bitmap scan (which visits every dead entry again on every claim
/// until the next vacuum) or a sequential scan of a table that keeps a week of sent rows
/// (docs/BENCHMARKS.md, lab-messaging, session 6).
const BEGIN: &str = "BEGIN; SET LOCAL synchronous_commit = off; \
    SET LOCAL enable_bitmapscan = off; SET LOCAL enable_seqscan = off";

/// How a relay batches and sweeps.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Rows per batch, all in flight before the confirms are awaited.
    pub batch_size: i64,
    /// How often to look for rows without a notification.
    pub sweep_every: Duration,
    /// How long published rows are kept (for audits and latency queries) before deletion.
    pub keep_sent: Duration,
    /// The queues (service, routing keys) that consume what this relay publishes, declared with
    /// their bindings on every new channel before anything is published: a topic exchange drops
    /// a message that no queue is bound to yet, which on a first boot (producer up before its
    /// consumer) would lose it. Services pass `lab_contracts::all_subscriptions()`.
    pub consumers: Vec<(String, Vec<String>)>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            // BENCH.md: lapin reaches ~10k msg/s with ~1000 confirms in flight; 500 gets most of
            // that while keeping one batch's transaction short.
            batch_size: 500,
            // Only a fallback for notifications lost during a reconnect; 1 s bounds that delay.
            sweep_every: Duration::from_secs(1),
            // A week: long enough to answer "was it sent, and when?" about any recent incident.
            keep_sent: Duration::from_secs(7 * 24 * 3_600),
            consumers: Vec::new(),
        }
    }
}

/// A running relay; stops with the shutdown token it was started with, or with [`Relay::stop`].
pub struct Relay {
    /// Cancels this relay only (a child of the application's shutdown token).
    stop: CancellationToken,
    /// Its task, awaited on stop.
    tracker: TaskTracker,
}

/// What the relay's task works with.
struct Context {
    /// The service's pool (its schema holds the outbox).
    pool: PgPool,
    /// The process's RabbitMQ connection.
    broker: Broker,
    /// Names the exchange to publish to.
    topology: Topology,
    /// Batch size and sweep interval.
    config: RelayConfig,
    /// Where latencies and backlog go.
    metrics: MessagingMetrics,
}

impl Relay {
    /// Starts relaying the outbox of `pool`'s schema to `topology`'s exchange.
    pub fn start(
        pool: PgPool,
        broker: Broker,
        topology: Topology,
        config: RelayConfig,
        metrics: MessagingMetrics,
        shutdown: &CancellationToken,
    ) -> Self {
        let stop = shutdown.child_token();
        let tracker = TaskTracker::new();
        let context = Context {
            pool,
            broker,
            topology,
            config,
            metrics,
        };
        tracker.spawn(run(context, stop.clone()));
        tracker.close();
        Self { stop, tracker }
    }

    /// Stops the relay (abandoning a batch in flight, whose rows stay pending) and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn run(context: Context, stop: CancellationToken) {
    let mut channel: Option<Channel> = None;
    let mut listener: Option<PgListener> = None;
    let mut backoff = BACKOFF_MIN;
    let mut gauges_at: Option<Instant> = None;
    let mut purged_at: Option<Instant> = None;
    loop {
        if listener.is_none() {
            listener = listen(&context.pool).await;
        }
        let drained = tokio::select! {
            () = stop.cancelled() => break,
            r = drain(&context, &mut channel) => r,
        };
        match drained {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                if gauges_at.is_none_or(|at| at.elapsed() >= GAUGES_EVERY) {
                    update_gauges(&context).await;
                    gauges_at = Some(Instant::now());
                }
                if purged_at.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
                    if let Err(e) =
                        outbox::purge_sent(&context.pool, context.config.keep_sent).await
                    {
                        tracing::debug!(error = %e, "outbox purge failed; trying later");
                    }
                    purged_at = Some(Instant::now());
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = wake(&mut listener, context.config.sweep_every) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "outbox relay failed; retrying");
                channel = None;
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    if let Some(channel) = channel {
        let _ = channel.close(200, "relay stopping".into()).await;
    }
}

/// A listener on the schema's outbox channel, or none (the timer sweeps meanwhile).
async fn listen(pool: &PgPool) -> Option<PgListener> {
    let attempt = async {
        let channel = outbox::channel(pool).await?;
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(&channel).await?;
        Ok::<_, MessagingError>(listener)
    };
    match attempt.await {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::debug!(error = %e, "outbox relay cannot LISTEN; sweeping on the timer");
            None
        }
    }
}

/// Returns on a notification or after `sweep_every`, whichever comes first.
async fn wake(listener: &mut Option<PgListener>, sweep_every: Duration) {
    let Some(l) = listener.as_mut() else {
        tokio::time::sleep(sweep_every).await;
        return;
    };
    tokio::select! {
        r = l.recv() => {
            if r.is_err() {
                *listener = None;
                return;
            }
        }
        () = tokio::time::sleep(sweep_every) => return,
    }
    // Under load every commit notifies; one pass serves them all, so swallow the ones already
    // arrived instead of making a pass for each.
    while let Some(Ok(Some(_))) = l.try_recv().now_or_never() {}
}

/// Publishes batches until fewer than a full batch is pending (or the relays are paused).
async fn drain(context: &Context, channel: &mut Option<Channel>) -> Result<(), MessagingError> {
    loop {
        let live = match channel.take() {
            Some(c) if c.status().connected() => c,
            _ => {
                let c = confirm_channel(&context.broker).await?;
                context.topology.declare_exchange(&c).await?;
                for (service, keys) in &context.config.consumers {
                    context.topology.of(service).declare(&c, keys).await?;
                }
                c
            }
        };
        let relayed = relay_batch(context, &live).await;
        *channel = Some(live);
        if relayed? < context.config.batch_size {
            return Ok(());
        }
    }
}

/// One batch in one transaction; returns how many rows it published. When a publish fails or
/// the broker refuses one part-way, the rows confirmed before it are marked sent (and committed)
/// and the error is returned: the rest, from the first unconfirmed row on, go again in order
/// in the next round, so a failure republishes only what the broker may not have.
async fn relay_batch(context: &Context, channel: &Channel) -> Result<i64, MessagingError> {
    let mut tx = lab_db::begin_with(&context.pool, BEGIN).await?;
    let rows = outbox::claim(&mut tx, context.config.batch_size).await?;
    if rows.is_empty() {
        // Nothing claimed (or paused): dropped rather than committed, so its `ROLLBACK` goes
        // out with the pool's ping on release instead of taking a round trip of its own.
        drop(tx);
        return Ok(0);
    }
    let Published { confirmed, error } =
        publish_all(channel, &context.topology.exchange(), &rows).await;
    let sent = &rows[..confirmed];
    if !sent.is_empty() {
        let ids: Vec<i64> = sent.iter().map(|r| r.id).collect();
        outbox::mark_sent(&mut tx, &ids).await?;
        tx.commit().await?;
        let now = Utc::now();
        for row in sent {
            context
                .metrics
                .observe_latency((now - row.created_at).to_std().unwrap_or_default());
        }
        context.metrics.relayed.inc_by(sent.len() as u64);
    }
    match error {
        Some(e) => Err(e),
        None => Ok(i64::try_from(sent.len()).unwrap_or(i64::MAX)),
    }
}

/// How far a batch got.
struct Published {
    /// Rows confirmed by the broker, counted from the first up to the first that was not.
    confirmed: usize,
    /// What stopped the rest, if anything did.
    error: Option<MessagingError>,
}

/// Publishes `rows` in order with all of them in flight, then awaits every confirm. A publish
/// that fails stops the ones after it; the confirms of those already out are still awaited.
async fn publish_all(channel: &Channel, exchange: &str, rows: &[Pending]) -> Published {
    let mut confirms = Vec::with_capacity(rows.len());
    let mut error = None;
    for row in rows {
        let published = channel
            .basic_publish(
                exchange.into(),
                row.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &row.body,
                row.properties.clone(),
            )
            .await;
        match published {
            Ok(confirm) => confirms.push(confirm),
            Err(e) => {
                error = Some(e.into());
                break;
            }
        }
    }
    let Ok(results) = tokio::time::timeout(CONFIRM_TIMEOUT, join_all(confirms)).await else {
        return Published {
            confirmed: 0,
            error: Some(MessagingError::ConfirmTimeout(CONFIRM_TIMEOUT)),
        };
    };
    let mut confirmed = 0;
    for (row, result) in rows.iter().zip(results) {
        let failure = match result {
            Ok(confirmation) if !confirmation.is_nack() => None,
            Ok(_) => Some(MessagingError::Nacked(row.message_id)),
            Err(e) => Some(e.into()),
        };
        if let Some(failure) = failure {
            // The first failure in publish order is the one to report.
            error = Some(failure);
            break;
        }
        confirmed += 1;
    }
    Published { confirmed, error }
}

async fn update_gauges(context: &Context) {
    if let Ok(status) = outbox::status(&context.pool).await {
        context.metrics.outbox_pending.set(status.pending);
        context
            .metrics
            .outbox_oldest_pending_age
            .set(status.oldest_pending_age.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use lab_test_support::TestEnv;
    use sqlx::PgPool;

    use super::BEGIN;
    use crate::outbox::CLAIM;

    /// The claim's plan in a transaction opened with `begin`.
    async fn claim_plan(pool: &PgPool, begin: &'static str) -> String {
        let mut tx = lab_db::begin_with(pool, begin).await.expect("begin");
        let lines: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {CLAIM}")))
                .bind(500_i64)
                .fetch_all(&mut *tx)
                .await
                .expect("explain");
        lines.join("\n")
    }

    #[tokio::test]
    async fn the_claim_walks_the_pending_index_even_when_statistics_say_nothing_is_pending() {
        let env = TestEnv::builder().with_database(&[]).start().await;
        let pool = lab_db::connect(&env.database("payments"), "payments", "relay-test", "-")
            .await
            .expect("test database");
        crate::migrate(&pool).await.expect("migrations");
        // Statistics taken while a burst of 300 rows was pending (the planner's cue for a bitmap
        // scan and a sort), then every row published: 3,000 dead entries in `lab_outbox_pending`.
        for statement in [
            "INSERT INTO lab_outbox (message_id, routing_key, envelope) \
             SELECT gen_random_uuid(), 'test.event', '{}' FROM generate_series(1, 3000)",
            "UPDATE lab_outbox SET sent_at = clock_timestamp() WHERE id <= 2700",
            "ANALYZE lab_outbox",
            "UPDATE lab_outbox SET sent_at = clock_timestamp() WHERE sent_at IS NULL",
        ] {
            sqlx::query(statement)
                .execute(&pool)
                .await
                .expect(statement);
        }

        let planner_alone = claim_plan(&pool, "BEGIN").await;
        let relay = claim_plan(&pool, BEGIN).await;

        assert!(
            !planner_alone.contains("Index Scan using lab_outbox_pending"),
            "the case this guards against: left alone, the planner does not walk the index\n{planner_alone}"
        );
        assert!(
            relay.contains("Index Scan using lab_outbox_pending")
                && !relay.contains("Bitmap")
                && !relay.contains("Seq Scan"),
            "the relay's claim must be a plain index scan\n{relay}"
        );
    }
}
