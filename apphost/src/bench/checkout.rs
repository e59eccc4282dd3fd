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
//! Completion is read from orders' own table: a poller looks up the orders still in flight every
//! [`POLL`] by primary key, which costs the services nothing (polling `GET /orders/{id}` from
//! every client would load orders as much as the placements do).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;
use lab_catalog::seed::seed_id;
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::measure::{
    LOAD_CORE, SERVER_CORE, own_exe, quantile, require_quiet, spawn_pinned_logged, wait_ok,
};
use crate::bootstrap;

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
const PEER_DATABASE: &str = "lab_bench_pgbench";
/// Every exchange and queue of this run, apart from `lab up`'s and the other benches'.
const AMQP_PREFIX: &str = "bench.checkout.";
/// Catalog's administrator token for this run only (restocking needs it); catalog listens on
/// loopback and lives as long as the bench.
const ADMIN_TOKEN: &str = "bench-checkout-admin";
/// The seeded products orders go to, round-robin: spreads the reservations over five inventory
/// rows, so the figure is not one row lock's.
const SKUS: [&str; 5] = [
    "LAB-MUG",
    "LAB-TEE",
    "LAB-STICKERS",
    "LAB-HOODIE",
    "LAB-NOTEBOOK",
];
/// Catalog's ceiling on stock: more than any run sells.
const STOCK: i64 = 1_000_000;
/// BENCH.md practice: warm up 2 s, then measure.
const WARM_UP: Duration = Duration::from_secs(2);
/// How often the in-flight orders are looked up: well under the latency measured.
const POLL: Duration = Duration::from_millis(5);
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
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&orders_url)
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
    let sat = saturate(&load, args.clients.max(1), seconds).await?;
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
    let mut tps = pgbench(&args.pg_admin_url, args.pgbench_scale, seconds).await?;
    let tps_rounds = tps.clone();
    let peer = quantile(&mut tps, 0.5);
    let lat = paced(&load, sat_rate / 2.0, seconds).await?;
    stop.cancel();
    poller.await.context("the completion poller panicked")??;

    let mut visible = lat.visible_ms.clone();
    let mut seen = lat.seen_ms.clone();
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
    drop(cluster);
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
    anyhow::ensure!(status.success(), "taskset could not pin the bench: {status}");
    Ok(())
}

/// The services under test; killed when dropped.
struct Cluster {
    _children: Vec<Child>,
    catalog: String,
    orders: String,
}

impl Cluster {
    async fn start(args: &CheckoutArgs, client: &reqwest::Client) -> anyhow::Result<Self> {
        let exe = own_exe()?;
        let port = || crate::ports::free_port().context("choosing a port");
        let [catalog, orders, checkout, payments, psp] =
            [port()?, port()?, port()?, port()?, port()?].map(|p| format!("http://127.0.0.1:{p}"));
        let db = |svc: &str| {
            bootstrap::service_url(
                &args.pg_admin_url,
                DATABASE,
                svc,
                lab_db::bootstrap::STATIC_PASSWORD,
            )
        };
        // The PSP makes its CA once and reuses it; payments trusts that CA for PayPal webhooks.
        let cert_dir = std::env::temp_dir().join("lab-bench-checkout-psp-certs");
        let cert_dir = cert_dir.to_string_lossy().into_owned();
        let psp_host = psp.trim_start_matches("http://").to_owned();
        let amqp = |v: &mut Vec<(&str, String)>| {
            v.push(("AMQP__URL", args.amqp_url.clone()));
            v.push(("AMQP__PREFIX", AMQP_PREFIX.to_owned()));
        };
        let mut specs: Vec<(&str, &String, Vec<(&str, String)>)> = Vec::new();
        let mut env = vec![
            ("DATABASE__URL", db("catalog")?),
            ("REDIS__URL", args.redis_url.clone()),
            ("REDIS__PREFIX", "bench:checkout:".to_owned()),
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("PEERS", catalog.clone()),
        ];
        amqp(&mut env);
        specs.push(("catalog", &catalog, env));
        let mut env = vec![
            ("DATABASE__URL", db("orders")?),
            ("CATALOG_URLS", catalog.clone()),
        ];
        amqp(&mut env);
        specs.push(("orders", &orders, env));
        let mut env = vec![("DATABASE__URL", db("checkout")?)];
        amqp(&mut env);
        specs.push(("checkout", &checkout, env));
        let mut env = vec![
            ("DATABASE__URL", db("payments")?),
            ("STRIPE__API_URL", format!("{psp}/stripe")),
            ("PAYPAL__API_URL", format!("{psp}/paypal")),
            ("PAYPAL__CERT_URL_HOSTS", psp_host),
            ("PAYPAL__CA_PEM_FILE", format!("{cert_dir}/ca.pem")),
        ];
        amqp(&mut env);
        specs.push(("payments", &payments, env));
        let env = vec![
            ("SCENARIO__AUTO", "approve".to_owned()),
            ("STRIPE__WEBHOOK_URL", format!("{payments}/webhooks/stripe")),
            ("PAYPAL__WEBHOOK_URL", format!("{payments}/webhooks/paypal")),
            ("PAYPAL__CERT_DIR", cert_dir.clone()),
        ];
        specs.push(("psp", &psp, env));

        let mut children = Vec::new();
        for (svc, url, env) in &specs {
            let prefix = lab_config::env_prefix(svc);
            let listen = url.trim_start_matches("http://").to_owned();
            let env: Vec<(String, String)> = [("HTTP__LISTEN", listen), ("HTTP__REPLICA", "1".into())]
                .into_iter()
                .chain(env.iter().cloned())
                .map(|(k, v)| (format!("{prefix}{k}"), v))
                .chain([("LAB_LOG".to_owned(), "warn".to_owned())])
                .collect();
            let log = args.log_dir.as_ref().map(|d| d.join(format!("{svc}.log")));
            children.push(spawn_pinned_logged(
                SERVER_CORE,
                &exe,
                &["run", svc],
                &env,
                log.as_deref(),
            )?);
        }
        for (svc, url, _) in &specs {
            wait_ok(client, &format!("{url}/readyz"))
                .await
                .with_context(|| format!("{svc} did not become ready"))?;
        }
        Ok(Self {
            _children: children,
            catalog,
            orders,
        })
    }
}

/// Sets the free stock of every product in [`SKUS`] to [`STOCK`]; returns their ids.
async fn restock(client: &reqwest::Client, catalog: &str) -> anyhow::Result<Vec<Uuid>> {
    let mut ids = Vec::new();
    for sku in SKUS {
        let id = seed_id(sku);
        let url = format!("{catalog}/products/{id}/inventory");
        let current = client.get(&url).send().await?.error_for_status()?;
        let etag = current
            .headers()
            .get("etag")
            .cloned()
            .context("no ETag on the inventory")?;
        let put = client
            .put(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("if-match", etag)
            .json(&json!({ "on_hand": STOCK }))
            .send()
            .await?;
        if !put.status().is_success() {
            bail!("restocking {sku} answered {}", put.status());
        }
        ids.push(id);
    }
    Ok(ids)
}

/// How an order ended, as orders recorded it.
#[derive(Debug)]
struct Finished {
    status: String,
    /// Placed → the terminal transition recorded by orders (when a GET first shows it), ms.
    visible_ms: f64,
    /// When checkout decided the final state, seconds since the Unix epoch.
    finished_epoch: f64,
    /// When the poller saw it.
    seen: Instant,
}

/// The orders in flight, each with whom to tell when it is final.
#[derive(Clone, Default)]
struct Watcher {
    waiting: Arc<Mutex<HashMap<Uuid, oneshot::Sender<Finished>>>>,
}

type Row = (Uuid, String, Option<f64>, Option<f64>);

impl Watcher {
    fn watch(&self, order: Uuid) -> oneshot::Receiver<Finished> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(order, tx);
        rx
    }

    fn forget(&self, order: Uuid) {
        self.lock().remove(&order);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Finished>>> {
        // A panic elsewhere while holding it leaves the map intact: keep using it.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every [`POLL`], looks up the orders in flight by primary key until `stop`.
    async fn run(self, pool: PgPool, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let ids: Vec<Uuid> = self.lock().keys().copied().collect();
            if ids.is_empty() {
                continue;
            }
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT o.id, o.status, \
                        EXTRACT(EPOCH FROM (SELECT min(h.recorded_at) FROM orders.order_history h \
                                            WHERE h.order_id = o.id AND h.terminal) - o.placed_at)::float8 * 1000, \
                        EXTRACT(EPOCH FROM o.finished_at)::float8 \
                 FROM orders.orders o WHERE o.id = ANY($1) AND o.status <> 'Pending'",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .context("looking up orders in flight")?;
            let seen = Instant::now();
            let mut waiting = self.lock();
            for (id, status, visible_ms, finished_epoch) in rows {
                if let Some(tx) = waiting.remove(&id) {
                    let _ = tx.send(Finished {
                        status,
                        visible_ms: visible_ms.unwrap_or(f64::NAN),
                        finished_epoch: finished_epoch.unwrap_or(f64::NAN),
                        seen,
                    });
                }
            }
        }
    }
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
    Completed { finished: Finished, answered: Instant },
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
            Ok(Ok(finished)) if finished.status == "Completed" => {
                Ok(Outcome::Completed { finished, answered })
            }
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
}

/// `clients` closed loops, each placing an order and waiting until it is final, for the warm-up
/// and [`ROUNDS`] rounds; completions are counted per round by the time checkout decided them.
async fn saturate(load: &Load, clients: u32, seconds: u32) -> anyhow::Result<Saturation> {
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
    let mut finished = Vec::new();
    let (mut failed, mut lost) = (0, 0);
    for result in futures::future::join_all(loops).await {
        let (d, f, l) = result?;
        finished.extend(d);
        failed += f;
        lost += l;
    }
    let from = start + WARM_UP.as_secs_f64();
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
    })
}

/// The latency run.
struct Paced {
    rate: f64,
    visible_ms: Vec<f64>,
    seen_ms: Vec<f64>,
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
        visible_ms: Vec::new(),
        seen_ms: Vec::new(),
        failed: 0,
        lost: 0,
    };
    while let Some(result) = tasks.join_next().await {
        match result.context("an order task panicked")?? {
            Outcome::Completed { finished, answered } => {
                out.visible_ms.push(finished.visible_ms);
                out.seen_ms
                    .push((finished.seen - answered).as_secs_f64() * 1000.0);
            }
            Outcome::Failed => out.failed += 1,
            Outcome::Lost => out.lost += 1,
        }
    }
    Ok(out)
}

/// pgbench TPC-B against a database of its own on the same server: `-i -s scale`, then
/// [`ROUNDS`] rounds of `-c8 -j2 -T seconds` from the load core; tps of each round.
async fn pgbench(admin_url: &str, scale: u32, seconds: u32) -> anyhow::Result<Vec<f64>> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL as administrator")?;
    lab_db::bootstrap::ensure_database(&mut admin, PEER_DATABASE, None)
        .await
        .context("creating the pgbench database")?;
    let _ = admin.close().await;
    let mut url = reqwest::Url::parse(admin_url).context("--pg-admin-url")?;
    url.set_path(&format!("/{PEER_DATABASE}"));
    let url = url.to_string();
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", &scale.to_string(), &url])
        .output()
        .await
        .context("running pgbench (it comes with the postgresql package)")?;
    if !init.status.success() {
        bail!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
    }
    let mut tps = Vec::new();
    for _ in 0..ROUNDS {
        let out = Command::new("taskset")
            .args(["-c", LOAD_CORE, "pgbench", "-c8", "-j2", "-T"])
            .arg(seconds.to_string())
            .arg(&url)
            .output()
            .await
            .context("running pgbench")?;
        let text = String::from_utf8_lossy(&out.stdout);
        tps.push(parse_tps(&text).with_context(|| format!("unreadable pgbench output: {text}"))?);
    }
    Ok(tps)
}

/// The `tps = …` figure of a pgbench report.
fn parse_tps(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pgbench_report_gives_its_tps() {
        let out = "transaction type: <builtin: TPC-B (sort of)>\nscaling factor: 10\nnumber of clients: 8\nlatency average = 5.012 ms\ninitial connection time = 12.345 ms\ntps = 1596.204913 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(1596.204913));
        assert_eq!(parse_tps("no figures here"), None);
    }
}
