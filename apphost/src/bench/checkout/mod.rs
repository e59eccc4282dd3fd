//! `lab bench checkout`: (1) orders that reach `Completed` per second at saturation, through the
//! whole saga (orders → checkout → catalog reserve → payments → PSP, auto-approved → capture →
//! catalog commit → orders), ÷ pgbench TPC-B transactions per second against the same
//! PostgreSQL, same run; (2) place→Completed latency at half the saturation rate.
//!
//! Runs catalog (one replica), orders, checkout, payments and the sandbox PSP as `lab run`
//! children pinned to the server core, wired as `lab up` wires them (orders → catalog, payments
//! ↔ PSP), in the database `lab_bench` under the AMQP prefix `bench.checkout.`; this process
//! (the load generator) and pgbench are pinned to the load core. PostgreSQL and RabbitMQ float.
//!
//! Completion is read from orders' own table (`watch.rs`); the services are started in
//! `cluster.rs`, the peer in `../pgbench.rs`; CPU and transactions per order are sampled in
//! `cpu.rs`.

mod cluster;
mod cpu;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::measure::{LOAD_CORE, quantile, require_quiet};
use crate::bootstrap;
use cluster::{Cluster, orders_of_sessions, restock, retried_sessions, webhook_attempts};
use cpu::{Group, Sampler};
use watch::{Finished, POLL, Watcher};

#[derive(Args)]
pub struct CheckoutArgs {
    /// Administrator URL of the PostgreSQL to use (databases `lab_bench` and `lab_bench_pgbench`
    /// are created in it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Length of each measured round (saturation and pgbench: median of 3; latency: one round).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Concurrent clients at saturation, each with one order in flight until it is final.
    #[arg(long, default_value_t = 32)]
    clients: u32,
    /// pgbench scale (`-i -s`): 10 as in BENCH.md; at 1 its 8 clients queue on one branch row.
    #[arg(long, default_value_t = 10)]
    pgbench_scale: u32,
    /// Append the services' output to `<dir>/<service>.log` (default: discarded).
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Measure even when the machine is busy (figures will be noisy).
    #[arg(long)]
    allow_busy: bool,
}

const DATABASE: &str = "lab_bench";
/// BENCH.md practice: warm up 2 s, then measure.
const WARM_UP: Duration = Duration::from_secs(2);
/// An order not final this long after it was placed is counted as lost (the saga's own
/// deadlines are longer, but a bench that waits for them measures nothing useful).
const GIVE_UP: Duration = Duration::from_secs(30);
/// Rounds of saturation and of pgbench; the median is reported.
const ROUNDS: u32 = 3;

pub async fn run(args: CheckoutArgs) -> anyhow::Result<()> {
    if !args.allow_busy {
        require_quiet().await?;
    }
    pin_self_to_load_core().await?;
    drop_database(&args.pg_admin_url).await?;
    bootstrap::prepare(
        &args.pg_admin_url,
        DATABASE,
        lab_db::bootstrap::STATIC_PASSWORD,
        None,
    )
    .await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let cluster = Cluster::start(&args, &client).await?;
    let products = restock(&client, &cluster.catalog).await?;

    let orders_url = bootstrap::service_url(
        &args.pg_admin_url,
        DATABASE,
        "orders",
        lab_db::bootstrap::STATIC_PASSWORD,
    )?;
    let watcher_options = orders_url
        .parse::<sqlx::postgres::PgConnectOptions>()
        .context("the orders schema's URL")?
        .application_name(cpu::WATCHER_APP);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(watcher_options)
        .await
        .context("connecting to the orders schema")?;
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let watcher = Watcher::default();
    let poller = tokio::spawn(watcher.clone().run(pool, stop.clone()));
    let load = Arc::new(Load {
        client,
        orders: cluster.orders.clone(),
        customer: format!("bench-{}", Uuid::new_v4()),
        products,
        watcher,
    });

    let seconds = args.seconds.max(1);
    let mut admin = {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&args.pg_admin_url)
            .await
            .context("connecting to PostgreSQL as administrator")?
    };
    let sat = saturate(
        &load,
        args.clients.max(1),
        seconds,
        Sampler::new(cluster.pids.clone()),
        &mut admin,
    )
    .await?;
    let mut sat_rates = sat.rates.clone();
    let sat_rate = quantile(&mut sat_rates, 0.5);
    if sat_rate <= 0.0 {
        bail!(
            "no order reached Completed ({} placed, {} final otherwise, {} lost): run with --log-dir to see why",
            sat.placed,
            sat.failed,
            sat.lost
        );
    }
    let mut tps =
        super::pgbench::tpcb(&args.pg_admin_url, args.pgbench_scale, seconds, ROUNDS).await?;
    let tps_rounds = tps.clone();
    let peer = quantile(&mut tps, 0.5);
    let before = webhook_attempts(&load.client, &cluster.psp).await?;
    let lat = paced(&load, sat_rate / 2.0, seconds).await?;
    let (sessions, retried) = retried_sessions(
        &webhook_attempts(&load.client, &cluster.psp).await?,
        &before,
    );
    let (sat_sessions, sat_retried) = retried_sessions(&before, &Default::default());
    stop.cancel();
    poller.await.context("the completion poller panicked")??;
    let retried_orders = orders_of_sessions(&args.pg_admin_url, &retried).await?;

    let mut visible: Vec<f64> = lat.completed.iter().map(|c| c.1).collect();
    let mut seen: Vec<f64> = lat.completed.iter().map(|c| c.2).collect();
    let mut first_time: Vec<f64> = lat
        .completed
        .iter()
        .filter(|c| !retried_orders.contains(&c.0))
        .map(|c| c.1)
        .collect();
    println!(
        "## lab bench checkout ({} clients, rounds of {seconds} s, median of {ROUNDS})\n",
        args.clients
    );
    println!("| measure | Lab | peer | ratio |\n|---|---|---|---|");
    println!(
        "| completed orders/s at saturation | {sat_rate:.1} (rounds {:.1?}; {} placed, {} final but not Completed, {} lost) | pgbench TPC-B `-s {} -c8 -j2`: {peer:.0} tps (rounds {tps_rounds:.0?}) | **{:.3}** |",
        sat.rates,
        sat.placed,
        sat.failed,
        sat.lost,
        args.pgbench_scale,
        sat_rate / peer
    );
    let cost = &sat.cost;
    let per_order = |s: f64| s * 1000.0 / cost.orders.max(1) as f64;
    let (svc, pg, mq) = (
        per_order(cost.cpu.seconds(Group::Services)),
        per_order(cost.cpu.seconds(Group::Postgres)),
        per_order(cost.cpu.seconds(Group::Rabbit)),
    );
    println!(
        "| CPU per completed order over the saturation rounds ({} orders) | services {svc:.1} ms, PostgreSQL backends {pg:.1} ms, RabbitMQ {mq:.1} ms: **{:.1} ms** | | |",
        cost.orders,
        svc + pg + mq
    );
    println!(
        "| PostgreSQL transactions per completed order (`xact_commit` of `{DATABASE}`, the bench's {} own lookups left out) | **{:.1}** | | |",
        cost.lookups,
        (cost.cpu.commits() - i64::try_from(cost.lookups).unwrap_or(i64::MAX)) as f64
            / cost.orders.max(1) as f64
    );
    println!(
        "| place→Completed at {:.1} orders/s (half of saturation), {} orders | p50 {:.1} ms, **p99 {:.1} ms** (placed → terminal transition recorded, orders' own timestamps) | | |",
        lat.rate,
        visible.len(),
        quantile(&mut visible, 0.5),
        quantile(&mut visible, 0.99)
    );
    println!(
        "| same orders, client side | p50 {:.1} ms, p99 {:.1} ms (POST answered → poll saw Completed, polled every {} ms); {} final but not Completed, {} lost | | |",
        quantile(&mut seen, 0.5),
        quantile(&mut seen, 0.99),
        POLL.as_millis(),
        lat.failed,
        lat.lost
    );
    println!(
        "| same, the {} orders whose webhooks were accepted at the first attempt | p50 {:.1} ms, p99 {:.1} ms | | |",
        first_time.len(),
        quantile(&mut first_time, 0.5),
        quantile(&mut first_time, 0.99)
    );
    println!(
        "| payment sessions whose webhooks needed a retry (PSP: 0.5 s later) | at saturation {} of {sat_sessions}; at half rate {} of {sessions} | | |",
        sat_retried.len(),
        retried.len()
    );
    drop(cluster);
    Ok(())
}

/// Drops the bench's database, so that every run starts from empty tables: the orders, outbox and
/// inbox rows of earlier runs would otherwise be scanned, vacuumed and counted in this one, and a
/// database migrated by a newer build would refuse an older one.
async fn drop_database(admin_url: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL as administrator")?;
    // A constant name, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await
    .context("dropping the previous run's database")?;
    let _ = admin.close().await;
    Ok(())
}

/// Moves every thread of this process to the load core, so the load generator does not compete
/// with the services it measures (children set their own core through `taskset`).
async fn pin_self_to_load_core() -> anyhow::Result<()> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", LOAD_CORE, &std::process::id().to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .context("running taskset (apt-get install util-linux)")?;
    anyhow::ensure!(
        status.success(),
        "taskset could not pin the bench: {status}"
    );
    Ok(())
}

/// What placing orders needs.
struct Load {
    client: reqwest::Client,
    /// Base URL of orders.
    orders: String,
    /// One customer per run (`X-Lab-Customer`).
    customer: String,
    products: Vec<Uuid>,
    watcher: Watcher,
}

/// How one order went.
enum Outcome {
    Completed {
        id: Uuid,
        finished: Finished,
        answered: Instant,
    },
    /// Final, but Rejected, Cancelled or RequiresReview.
    Failed,
    /// Not final within [`GIVE_UP`].
    Lost,
}

impl Load {
    /// Places one order of one unit and waits until it is final.
    async fn order(&self, n: usize) -> anyhow::Result<Outcome> {
        let product = self.products[n % self.products.len()];
        let r = self
            .client
            .post(format!("{}/orders", self.orders))
            .header("idempotency-key", Uuid::new_v4().to_string())
            .header("x-lab-customer", &self.customer)
            .json(&json!({ "lines": [{ "product_id": product, "quantity": 1 }], "provider": "stripe" }))
            .send()
            .await?;
        if r.status().as_u16() != 202 {
            bail!("POST /orders answered {}", r.status());
        }
        let body: Value = r.json().await?;
        let answered = Instant::now();
        let id: Uuid = body["order_id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .context("no order_id in the answer")?;
        let rx = self.watcher.watch(id);
        match tokio::time::timeout(GIVE_UP, rx).await {
            Ok(Ok(finished)) if finished.status == "Completed" => Ok(Outcome::Completed {
                id,
                finished,
                answered,
            }),
            Ok(Ok(_)) => Ok(Outcome::Failed),
            Ok(Err(_)) | Err(_) => {
                self.watcher.forget(id);
                Ok(Outcome::Lost)
            }
        }
    }
}

fn epoch_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The saturation run.
struct Saturation {
    /// Completed orders/s in each round.
    rates: Vec<f64>,
    placed: usize,
    failed: usize,
    lost: usize,
    /// What the rounds cost.
    cost: Cost,
}

/// The work done over the saturation rounds (warm-up left out).
struct Cost {
    /// CPU and transactions sampled from the start of the first round to the end of the last.
    cpu: Sampler,
    /// Orders completed in those rounds.
    orders: usize,
    /// The bench's own lookups of orders in flight in that window (transactions to leave out).
    lookups: u64,
}

/// Samples `cpu` from the end of the warm-up until `deadline`, every second so that backends
/// opened mid-run are caught; returns it with the bench's own lookups in that window.
async fn sample_rounds(
    mut cpu: Sampler,
    admin: &mut sqlx::PgConnection,
    watcher: &Watcher,
    deadline: Instant,
) -> anyhow::Result<(Sampler, u64)> {
    tokio::time::sleep(WARM_UP).await;
    cpu.sample(admin).await?;
    let lookups = watcher.lookups();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        cpu.sample(admin).await?;
        if left <= Duration::from_secs(1) {
            return Ok((cpu, watcher.lookups() - lookups));
        }
    }
}

/// `clients` closed loops, each placing an order and waiting until it is final, for the warm-up
/// and [`ROUNDS`] rounds; completions are counted per round by the time checkout decided them.
async fn saturate(
    load: &Load,
    clients: u32,
    seconds: u32,
    cpu: Sampler,
    admin: &mut sqlx::PgConnection,
) -> anyhow::Result<Saturation> {
    let round = Duration::from_secs(u64::from(seconds));
    let start = epoch_now();
    let deadline = Instant::now() + WARM_UP + round * ROUNDS;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let loops = (0..clients).map(|_| async {
        let mut done = Vec::new();
        let (mut failed, mut lost) = (0, 0);
        while Instant::now() < deadline {
            let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match load.order(n).await? {
                Outcome::Completed { finished, .. } => done.push(finished.finished_epoch),
                Outcome::Failed => failed += 1,
                Outcome::Lost => lost += 1,
            }
        }
        anyhow::Ok((done, failed, lost))
    });
    let (results, sampled) = tokio::join!(
        futures::future::join_all(loops),
        sample_rounds(cpu, admin, &load.watcher, deadline)
    );
    let (cpu, lookups) = sampled?;
    let mut finished = Vec::new();
    let (mut failed, mut lost) = (0, 0);
    for result in results {
        let (d, f, l) = result?;
        finished.extend(d);
        failed += f;
        lost += l;
    }
    let from = start + WARM_UP.as_secs_f64();
    let to = from + f64::from(ROUNDS * seconds);
    let orders = finished.iter().filter(|&&t| t >= from && t < to).count();
    let rates = (0..ROUNDS)
        .map(|i| {
            let a = from + f64::from(i * seconds);
            let b = a + f64::from(seconds);
            let n = finished.iter().filter(|&&t| t >= a && t < b).count();
            n as f64 / f64::from(seconds)
        })
        .collect();
    Ok(Saturation {
        rates,
        placed: next.into_inner(),
        failed,
        lost,
        cost: Cost {
            cpu,
            orders,
            lookups,
        },
    })
}

/// The latency run.
struct Paced {
    rate: f64,
    /// Order, placed → Completed recorded (ms), POST answered → poll saw it (ms).
    completed: Vec<(Uuid, f64, f64)>,
    failed: usize,
    lost: usize,
}

/// Places orders at `rate` per second on a fixed schedule (open loop: a slow order does not
/// delay the next) for `seconds`, each watched until final.
async fn paced(load: &Arc<Load>, rate: f64, seconds: u32) -> anyhow::Result<Paced> {
    let start = tokio::time::Instant::now();
    let count = (rate * f64::from(seconds)).ceil().max(1.0) as usize;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(n as f64 / rate)).await;
        let load = load.clone();
        tasks.spawn(async move { load.order(n).await });
    }
    let mut out = Paced {
        rate,
        completed: Vec::new(),
        failed: 0,
        lost: 0,
    };
    while let Some(result) = tasks.join_next().await {
        match result.context("an order task panicked")?? {
            Outcome::Completed {
                id,
                finished,
                answered,
            } => out.completed.push((
                id,
                finished.visible_ms,
                (finished.seen - answered).as_secs_f64() * 1000.0,
            )),
            Outcome::Failed => out.failed += 1,
            Outcome::Lost => out.lost += 1,
        }
    }
    Ok(out)
}
