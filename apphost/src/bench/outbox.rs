//! `lab bench outbox`: outbox relay throughput and commit→publish latency, against raw lapin
//! confirmed publishes in the same run (BENCH.md: measure the peer in the same run, report the
//! ratio), and the inbox consumer against raw lapin consuming.
//!
//! Runs against a PostgreSQL and a RabbitMQ given by URL (the machine's by default), in a
//! database `lab_bench` and under the AMQP prefix `bench.outbox.`, touching nothing else. Three
//! rounds each, the median reported:
//! - raw: persistent ~300 B messages to a durable queue, one channel, confirms awaited per window
//!   of [`WINDOW`] (the relay's batch size), nothing else;
//! - relay: `events` rows committed while the relay is paused, then resumed; time until the
//!   outbox is empty and every message is confirmed, same durable queue shape;
//! - latency: a producer commits one event every 2 ms for 4 s while the relay runs; per row
//!   `sent_at - created_at` from the table, and `commit()` returned → delivered to a consumer;
//! - consume: `events / 4` messages pre-filled into a queue; raw lapin consuming with an ack per
//!   message against the [`Consumer`] (inbox insert, a one-row handler, commit, ack), both with
//!   the default prefetch.
//!
//! The relay and its peer run in this process, so both share its scheduling alike.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use lab_messaging::lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
    QueuePurgeOptions,
};
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::{
    AmqpSettings, Broker, Consumer, ConsumerConfig, Envelope, Handler, HandlerError,
    MessagingMetrics, Relay, RelayConfig, Topology, outbox,
};
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::measure::require_quiet;
use crate::bootstrap;

#[derive(Args)]
pub struct OutboxArgs {
    /// Administrator URL of the PostgreSQL to use (a database `lab_bench` is created in it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Events per relay round (a quarter of them per consume round).
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Measure even when the machine is busy (figures will be noisy).
    #[arg(long)]
    allow_busy: bool,
}

const DATABASE: &str = "lab_bench";
/// Any service's schema holds the outbox tables; payments is the one whose relay this models.
const SCHEMA: &str = "payments";

/// Confirms in flight per window, equal to the relay's batch size so both sides wait alike.
const WINDOW: usize = 500;
/// Rounds per measurement; the median is reported (BENCH.md practice).
const ROUNDS: usize = 3;

pub async fn run(args: OutboxArgs) -> anyhow::Result<()> {
    if !args.allow_busy {
        require_quiet().await?;
    }
    let events = args.events.max(1_000);
    bootstrap::prepare(
        &args.pg_admin_url,
        DATABASE,
        lab_db::bootstrap::STATIC_PASSWORD,
        None,
    )
    .await?;
    let db_url = bootstrap::service_url(
        &args.pg_admin_url,
        DATABASE,
        SCHEMA,
        lab_db::bootstrap::STATIC_PASSWORD,
    )?;
    let db = lab_db::DbSettings {
        url: lab_config::SecretString::new(db_url),
        ..lab_db::DbSettings::local(SCHEMA)
    };
    let pool = lab_db::connect(&db, SCHEMA, "outbox-bench", "--pg-admin-url").await?;
    lab_messaging::migrate(&pool).await?;
    sqlx::query("DELETE FROM lab_outbox").execute(&pool).await?;
    let settings = AmqpSettings {
        url: lab_config::SecretString::new(args.amqp_url.clone()),
        prefix: "bench.outbox.".to_owned(),
        ..AmqpSettings::default()
    };
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let broker = Broker::start(&settings, "outbox-bench", shutdown.clone());
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.connection().is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "RabbitMQ not reachable at --amqp-url"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let topology = Topology::new(&settings, SCHEMA);
    let sink = declare_sink(&broker, &topology, &settings).await?;

    let mut raw = Vec::new();
    let mut relayed = Vec::new();
    // Warm-up: one small round of each, not counted.
    raw_round(&broker, &sink, 2_000).await?;
    relay_round(&pool, &broker, &topology, &shutdown, 2_000).await?;
    for _ in 0..ROUNDS {
        raw.push(raw_round(&broker, &sink, events).await?);
        purge(&broker, &sink).await?;
        relayed.push(relay_round(&pool, &broker, &topology, &shutdown, events).await?);
        purge(&broker, &sink).await?;
    }
    let [p50, p99, c50, c99] = latency(&pool, &broker, &topology, &shutdown, &sink).await?;
    let (mut raw_consumed, mut consumed) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (r, c) =
            consume_round(&pool, &broker, &topology, &shutdown, &settings, events / 4).await?;
        raw_consumed.push(r);
        consumed.push(c);
    }
    let raw_rate = median(&mut raw);
    let relay_rate = median(&mut relayed);
    let raw_consume_rate = median(&mut raw_consumed);
    let consume_rate = median(&mut consumed);
    println!("## lab bench outbox ({events} events per round, median of {ROUNDS})\n");
    println!("| measure | Lab | peer | ratio |\n|---|---|---|---|");
    println!(
        "| relayed, msg/s | {relay_rate:.0} (rounds {relayed:.0?}) | raw lapin confirmed publishes: {raw_rate:.0} (rounds {raw:.0?}) | **{:.2}** |",
        relay_rate / raw_rate
    );
    println!(
        "| at 500 commits/s, row written → confirmed (table) | p50 {p50:.1} ms, p99 {p99:.1} ms | | |"
    );
    println!(
        "| at 500 commits/s, commit returned → delivered | p50 {c50:.1} ms, p99 {c99:.1} ms | | |"
    );
    println!(
        "| consumed (inbox + handler + commit, ack), msg/s | {consume_rate:.0} (rounds {consumed:.0?}) | raw lapin consume, ack each: {raw_consume_rate:.0} | **{:.2}** |",
        consume_rate / raw_consume_rate
    );
    let channel = broker
        .connection()
        .map_err(anyhow::Error::msg)?
        .create_channel()
        .await?;
    let _ = channel
        .queue_delete(sink.as_str().into(), Default::default())
        .await;
    let _ = channel
        .queue_delete(
            format!("{}bench.raw-consume", settings.prefix).into(),
            Default::default(),
        )
        .await;
    let _ = topology.delete(&channel).await;
    Ok(())
}

/// A durable queue bound to everything on the exchange, so relayed messages are stored exactly
/// as raw ones are.
async fn declare_sink(
    broker: &Broker,
    topology: &Topology,
    settings: &AmqpSettings,
) -> anyhow::Result<String> {
    let channel = broker
        .connection()
        .map_err(anyhow::Error::msg)?
        .create_channel()
        .await?;
    topology.declare_exchange(&channel).await?;
    let sink = format!("{}bench.sink", settings.prefix);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(sink.as_str().into(), durable, FieldTable::default())
        .await?;
    channel
        .queue_bind(
            sink.as_str().into(),
            topology.exchange().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(sink)
}

async fn purge(broker: &Broker, queue: &str) -> anyhow::Result<()> {
    let channel = broker
        .connection()
        .map_err(anyhow::Error::msg)?
        .create_channel()
        .await?;
    channel
        .queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    Ok(())
}

fn event(i: usize) -> Envelope {
    Envelope::new(
        "bench.something-happened",
        serde_json::json!({ "order_id": i, "sku": "LAB-0001", "quantity": 2, "amount_minor": 1299 }),
    )
}

/// Raw lapin: the same messages straight to the sink queue, confirms awaited per window.
async fn raw_round(broker: &Broker, sink: &str, events: usize) -> anyhow::Result<f64> {
    let channel = lab_messaging::topology::confirm_channel(broker).await?;
    let messages: Vec<Envelope> = (0..events).map(event).collect();
    let started = Instant::now();
    for window in messages.chunks(WINDOW) {
        let mut confirms = Vec::with_capacity(window.len());
        for m in window {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    sink.into(),
                    BasicPublishOptions::default(),
                    &m.to_body()?,
                    m.properties(),
                )
                .await?;
            confirms.push(confirm);
        }
        for c in futures::future::join_all(confirms).await {
            anyhow::ensure!(c?.is_ack(), "raw publish nacked");
        }
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// The relay: rows committed while paused, then resumed and timed until the outbox is empty.
async fn relay_round(
    pool: &PgPool,
    broker: &Broker,
    topology: &Topology,
    shutdown: &CancellationToken,
    events: usize,
) -> anyhow::Result<f64> {
    outbox::pause(pool).await?;
    let relay = Relay::start(
        pool.clone(),
        broker.clone(),
        topology.clone(),
        RelayConfig::default(),
        MessagingMetrics::default(),
        shutdown,
    );
    // 100 events per transaction: filling the table is not what is measured.
    for chunk in (0..events).collect::<Vec<_>>().chunks(100) {
        let mut tx = lab_db::begin(pool).await?;
        for i in chunk {
            outbox::enqueue(&mut tx, &event(*i)).await?;
        }
        tx.commit().await?;
    }
    let started = Instant::now();
    outbox::resume(pool).await?;
    loop {
        if outbox::status(pool).await?.pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    relay.stop().await;
    Ok(rate)
}

/// Commit→publish latency with a steady producer (one commit every 2 ms for 4 s), two ways:
/// per row from the table (`sent_at - created_at`: row written → confirm seen, which includes the
/// producer's own commit), and from the client (`commit()` returned → message delivered to a
/// consumer of the sink queue, which includes the broker's delivery).
async fn latency(
    pool: &PgPool,
    broker: &Broker,
    topology: &Topology,
    shutdown: &CancellationToken,
    sink: &str,
) -> anyhow::Result<[f64; 4]> {
    sqlx::query("DELETE FROM lab_outbox").execute(pool).await?;
    purge(broker, sink).await?;
    let channel = broker
        .connection()
        .map_err(anyhow::Error::msg)?
        .create_channel()
        .await?;
    let mut deliveries = channel
        .basic_consume(
            sink.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    let arrivals = tokio::spawn(async move {
        let mut seen: HashMap<String, Instant> = HashMap::new();
        while let Some(Ok(d)) = deliveries.next().await {
            let id = d.properties.message_id().as_ref().map(|i| i.to_string());
            seen.insert(id.unwrap_or_default(), Instant::now());
        }
        seen
    });
    let relay = Relay::start(
        pool.clone(),
        broker.clone(),
        topology.clone(),
        RelayConfig::default(),
        MessagingMetrics::default(),
        shutdown,
    );
    let mut committed: Vec<(String, Instant)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let until = Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    while Instant::now() < until {
        tick.tick().await;
        let e = event(i);
        let mut tx = lab_db::begin(pool).await?;
        outbox::enqueue(&mut tx, &e).await?;
        tx.commit().await?;
        committed.push((e.message_id.to_string(), Instant::now()));
        i += 1;
    }
    while outbox::status(pool).await?.pending > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.stop().await;
    // Deliveries of confirmed messages follow within milliseconds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    channel.close(200, "done".into()).await?;
    let seen = arrivals.await?;
    let mut client: Vec<f64> = committed
        .iter()
        .filter_map(|(id, at)| seen.get(id).map(|got| got.saturating_duration_since(*at)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    anyhow::ensure!(client.len() == committed.len(), "lost deliveries");
    client.sort_by(f64::total_cmp);
    let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let (p50, p99): (f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) \
         FROM (SELECT extract(epoch FROM sent_at - created_at) * 1000 AS ms FROM lab_outbox) t",
    )
    .fetch_one(pool)
    .await?;
    Ok([p50, p99, pct(&client, 0.5), pct(&client, 0.99)])
}

/// The consumer against raw lapin consuming, each from a queue pre-filled with `n` messages:
/// raw acks each delivery; the consumer runs inbox insert + a one-row handler + commit, then acks.
async fn consume_round(
    pool: &PgPool,
    broker: &Broker,
    topology: &Topology,
    shutdown: &CancellationToken,
    settings: &AmqpSettings,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let channel = lab_messaging::topology::confirm_channel(broker).await?;
    topology.declare(&channel, &[]).await?;
    let raw_queue = format!("{}bench.raw-consume", settings.prefix);
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(raw_queue.as_str().into(), durable, FieldTable::default())
        .await?;
    for queue in [raw_queue.as_str(), &topology.queue()] {
        for window in (0..n).collect::<Vec<_>>().chunks(WINDOW) {
            let mut confirms = Vec::new();
            for i in window {
                let m = event(*i);
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            queue.into(),
                            BasicPublishOptions::default(),
                            &m.to_body()?,
                            m.properties(),
                        )
                        .await?,
                );
            }
            futures::future::join_all(confirms).await;
        }
    }

    channel
        .basic_qos(settings.prefetch, Default::default())
        .await?;
    let mut deliveries = channel
        .basic_consume(
            raw_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    for _ in 0..n {
        let delivery = deliveries.next().await.context("raw consumer ended")??;
        delivery.ack(Default::default()).await?;
    }
    let raw_rate = n as f64 / started.elapsed().as_secs_f64();
    channel.close(200, "done".into()).await?;

    sqlx::query("CREATE TABLE IF NOT EXISTS bench_effects (message_id UUID NOT NULL)")
        .execute(pool)
        .await?;
    sqlx::query("TRUNCATE bench_effects, lab_inbox")
        .execute(pool)
        .await?;
    let started = Instant::now();
    let consumer = Consumer::start(
        pool.clone(),
        broker.clone(),
        topology.clone(),
        Vec::new(),
        ConsumerConfig::from(settings),
        Effects,
        MessagingMetrics::default(),
        shutdown,
    );
    loop {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM bench_effects")
            .fetch_one(pool)
            .await?;
        if done >= n as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    consumer.stop().await;
    Ok((raw_rate, rate))
}

/// A handler with a minimal state change: one row per message.
struct Effects;

impl Handler for Effects {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO bench_effects (message_id) VALUES ($1)")
            .bind(message.message_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
