//! `lab soak`: buyers' journeys through the BFF's public API at a steady rate while faults are
//! injected on every layer, then a verdict from the services' own data.
//!
//! Phases: **warm-up** (journeys, no faults), **chaos** (journeys, and faults drawn from
//! [`faults::RECIPES`], a few at a time, each ending by itself), **settle** (no new journeys or
//! faults: the journeys in flight finish, then wait until no order is pending, no fault is
//! active, the cluster is clean and every invariant is judged, bounded by `--settle-timeout`),
//! **verify** (the invariants once more: the verdict). The report (Markdown and JSON) lists the
//! faults with their recovery times, orders by final state, every invariant with its numbers and
//! the error rate and latency of each phase. The exit code is non-zero when an invariant is
//! violated, a buyer saw a broken promise, or the settle phase timed out; errors during chaos are
//! expected and only counted.
//!
//! Map: [`cluster`] finds or starts the cluster, [`journeys`] is what buyers do, [`traffic`]
//! times and counts their calls, [`faults`] picks and applies faults, [`monitor`] watches
//! breakers and health for recovery times, [`report`] writes it all down.

pub mod cluster;
pub mod faults;
pub mod journeys;
pub mod monitor;
pub mod report;
pub mod traffic;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use cluster::{Cluster, ClusterUrls};
use journeys::{Kind, Shop, Tally};
use report::{RecoverySummary, Report, Settings, Settle, Verdict};
use traffic::{Phase, Traffic};

/// Arguments of `lab soak`.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// The data directory of the cluster (`lab up`'s), or where `--up` starts one.
    #[arg(long, default_value = ".lab", env = "LAB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Warm-up plus chaos (`60s`, `10m`, `1h`); settle and verify come after.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub duration: Duration,
    /// Journeys started per second (open loop: a slow journey does not delay the next).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seed of the draws (journeys, faults, targets); random when not given, and reported.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write the report to `<path>.md` and `<path>.json` (an extension given is replaced).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Faults active at once, at most.
    #[arg(long, default_value_t = 2)]
    pub max_overlap: usize,
    /// How long the settle phase may wait for the cluster to come to rest.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub settle_timeout: Duration,
    /// Start a cluster for the run (`lab up` with the arguments after `--`) and stop it after.
    #[arg(long)]
    pub up: bool,
    /// Arguments for `lab up` with `--up` (after `--`).
    #[arg(last = true)]
    pub up_args: Vec<String>,
}

/// `90s`, `10m`, `1h`, `1500ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 60s, 10m, 1h)"))?;
    let seconds = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{unit}` is not a unit: ms, s, m or h")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// How often the monitor looks at breakers and health during a soak: fine enough for recovery
/// times of seconds, light enough (two BFF calls, eight readiness probes) on a busy machine.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// How often the settle phase asks whether the cluster is at rest.
const SETTLE_POLL: Duration = Duration::from_secs(2);
/// How often the order product's stock is checked and topped up.
const RESTOCK_EVERY: Duration = Duration::from_secs(15);

/// Runs a soak; `Err` (a non-zero exit) when it failed, after writing its report.
pub async fn soak(args: SoakArgs) -> anyhow::Result<()> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be above 0 journeys/s, not {}", args.rate);
    }
    let cluster = if args.up {
        Cluster::start(&args.data_dir, &args.up_args).await?
    } else {
        Cluster::attach(&args.data_dir).await?
    };
    let result = run(&args, &cluster.urls).await;
    cluster.stop().await;
    let report = result?;
    if let Some(path) = &args.report {
        write(path, &report)?;
        println!(
            "report: {} and {}",
            path.with_extension("md").display(),
            path.with_extension("json").display()
        );
    } else {
        println!("{}", report.markdown());
    }
    if !report.verdict.passed {
        bail!("soak failed: {}", report.verdict.reasons.join("; "));
    }
    println!(
        "soak passed: {} orders by final state {:?}, {} faults, every invariant held",
        report.journeys.orders.values().sum::<u64>(),
        report.journeys.orders,
        report.faults.iter().filter(|f| f.injected).count()
    );
    Ok(())
}

fn write(path: &Path, report: &Report) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let md = path.with_extension("md");
    let json = path.with_extension("json");
    std::fs::write(&md, report.markdown()).with_context(|| format!("writing {}", md.display()))?;
    std::fs::write(&json, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

/// The phases against a ready cluster.
async fn run(args: &SoakArgs, urls: &ClusterUrls) -> anyhow::Result<Report> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()?;
    let traffic = Traffic::new(client.clone());
    // The soak's own questions (invariants, fault state) are kept out of the journeys' figures.
    let control_traffic = Traffic::new(client.clone());
    let topology = faults::Topology::discover(&client, &urls.control, &urls.bff).await?;
    let shop = Shop::open(traffic.clone(), &urls.bff).await?;
    let total = args.duration;
    // A sixth of the run, 5–60 s: enough for caches, pools and breakers to find their level.
    let warm_up = (total / 6)
        .clamp(Duration::from_secs(5), Duration::from_secs(60))
        .min(total / 2);
    let chaos = total - warm_up;
    let planned = (args.rate * total.as_secs_f64()).ceil() as i64;
    let stock = planned + 200;
    shop.restock(&shop.order_product, stock, stock)
        .await
        .map_err(|e| anyhow::anyhow!("stocking {}: {e}", journeys::ORDER_SKU))?;

    let stop_monitor = CancellationToken::new();
    let _stop_monitor = stop_monitor.clone().drop_guard();
    let timeline = monitor::Timeline::default();
    let absent = monitor::absent_services(&client, urls).await?;
    tokio::spawn(timeline.clone().run(
        client.clone(),
        urls.bff.clone(),
        absent.clone(),
        SAMPLE_EVERY,
        stop_monitor.clone(),
    ));

    let started = Instant::now();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let chaos_at = started + warm_up;
    let chaos_end = chaos_at + chaos;
    traffic.set_phase(Phase::WarmUp);
    println!(
        "soak: seed {seed}, {:.0} s warm-up, {:.0} s chaos at {} journeys/s against {}",
        warm_up.as_secs_f64(),
        chaos.as_secs_f64(),
        args.rate,
        urls.bff
    );

    let tally = Arc::new(Mutex::new(Tally::default()));
    let abandon = CancellationToken::new();
    let driver = tokio::spawn(drive(
        Arc::clone(&shop),
        args.rate,
        seed,
        chaos_end,
        (planned / 4, stock),
        Arc::clone(&tally),
        abandon.clone(),
    ));
    tokio::time::sleep_until(chaos_at.into()).await;
    traffic.set_phase(Phase::Chaos);
    let mut injector = faults::Injector::new(
        seed.wrapping_add(1),
        topology,
        urls,
        client.clone(),
        started,
    );
    injector.run(chaos_end, args.max_overlap).await;
    tokio::time::sleep_until(chaos_end.into()).await;

    traffic.set_phase(Phase::Settle);
    let settle_started = Instant::now();
    let settle_deadline = settle_started + args.settle_timeout;
    let mut waiting_on = Vec::new();
    let abandon_at = tokio::spawn({
        let abandon = abandon.clone();
        async move {
            tokio::time::sleep_until(settle_deadline.into()).await;
            abandon.cancel();
        }
    });
    let abandoned = driver.await.context("the journey driver panicked")?;
    abandon_at.abort();
    if abandoned > 0 {
        waiting_on.push(format!("{abandoned} journeys still following their orders"));
    }
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    let mut settled = waiting_on.is_empty();
    if settled {
        settled = false;
        while Instant::now() < settle_deadline {
            waiting_on = at_rest(&control_traffic, urls, &absent).await;
            if waiting_on.is_empty() {
                settled = true;
                break;
            }
            tokio::time::sleep(SETTLE_POLL).await;
        }
    }
    let settle = Settle {
        seconds: settle_started.elapsed().as_secs_f64(),
        timed_out: !settled,
        waiting_on,
    };

    traffic.set_phase(Phase::Verify);
    let verify_started = Instant::now();
    let invariants = invariants(&control_traffic, &urls.bff).await.unwrap_or_else(
        |e| serde_json::json!({ "status": "unknown", "error": e.to_string(), "invariants": [] }),
    );
    stop_monitor.cancel();
    let mut fault_log = std::mem::take(&mut injector.log);
    faults::judge_recovery(&mut fault_log, &timeline);

    let mut reasons = Vec::new();
    if settle.timed_out {
        reasons.push(format!(
            "the cluster did not settle within {:?}: {}",
            args.settle_timeout,
            settle.waiting_on.join("; ")
        ));
    }
    for i in invariants["invariants"].as_array().into_iter().flatten() {
        if i["status"] == "violated" {
            reasons.push(format!("{} violated", i["name"].as_str().unwrap_or("?")));
        }
    }
    if invariants["status"] != "held" && reasons.is_empty() {
        reasons.push(format!("invariants {}", invariants["status"]));
    }
    reasons.extend(tally.violations.iter().cloned());

    let mut seconds = BTreeMap::new();
    seconds.insert(Phase::WarmUp, warm_up.as_secs_f64());
    seconds.insert(Phase::Chaos, chaos.as_secs_f64());
    seconds.insert(Phase::Settle, settle.seconds);
    seconds.insert(Phase::Verify, verify_started.elapsed().as_secs_f64());
    Ok(Report {
        settings: Settings {
            seed,
            started_at_unix_s: started_unix,
            warm_up_s: warm_up.as_secs_f64(),
            chaos_s: chaos.as_secs_f64(),
            rate: args.rate,
            max_overlap: args.max_overlap,
            settle_timeout_s: args.settle_timeout.as_secs_f64(),
            bff: urls.bff.clone(),
            command: command_line(),
        },
        verdict: Verdict {
            passed: reasons.is_empty(),
            reasons,
        },
        phases: traffic.stats(&seconds),
        journeys: tally,
        recovery: RecoverySummary::of(&fault_log),
        faults: fault_log,
        settle,
        invariants,
    })
}

/// `lab soak …` as it was typed, paths after `--data-dir`/`--report` kept as given.
fn command_line() -> String {
    let mut words: Vec<String> = std::env::args().collect();
    if let Some(first) = words.first_mut() {
        *first = "lab".into();
    }
    words.join(" ")
}

/// Starts journeys at `rate` per second until `until` (kinds drawn from `seed`), tops the order
/// product up while it runs, and adds each journey's outcome to `tally` as it ends; then waits
/// for the journeys in flight until `stop`, when those still running are abandoned (their
/// number is returned).
async fn drive(
    shop: Arc<Shop>,
    rate: f64,
    seed: u64,
    until: Instant,
    (restock_below, restock_to): (i64, i64),
    tally: Arc<Mutex<Tally>>,
    stop: CancellationToken,
) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut running = tokio::task::JoinSet::new();
    let add = |outcome: &journeys::Outcome| {
        tally
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .add(outcome);
    };
    let start = tokio::time::Instant::now();
    let mut next_restock = Instant::now() + RESTOCK_EVERY;
    for n in 0u64.. {
        let at = start + Duration::from_secs_f64(n as f64 / rate);
        if at.into_std() >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
        let kind = Kind::draw(&mut rng);
        let s = Arc::clone(&shop);
        running.spawn(async move { Some(s.run(kind).await) });
        if Instant::now() >= next_restock {
            next_restock = Instant::now() + RESTOCK_EVERY;
            let s = Arc::clone(&shop);
            running.spawn(async move {
                // Failing during chaos is fine: the next check tries again.
                let _ = s
                    .restock(&s.order_product, restock_below.max(50), restock_to)
                    .await;
                None
            });
        }
        while let Some(done) = running.try_join_next() {
            if let Ok(Some(outcome)) = done {
                add(&outcome);
            }
        }
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => return running.len(),
            done = running.join_next() => match done {
                None => return 0,
                Some(Ok(Some(outcome))) => add(&outcome),
                Some(_) => {}
            },
        }
    }
}

/// `GET /api/chaos/invariants`, as a new visitor: the chaos routes' bucket is per session (five,
/// then one per 5 s), and a visitor's first call is counted against its IP instead, so the
/// session is taken on a cheap default-class call first.
async fn invariants(traffic: &Traffic, bff: &str) -> anyhow::Result<Value> {
    let mut visitor = traffic::Visitor::new(traffic, bff);
    visitor
        .get("/api/breakers")
        .await
        .map_err(|e| anyhow::anyhow!("GET /api/breakers: {e}"))?;
    let answer = visitor
        .get("/api/chaos/invariants")
        .await
        .map_err(|e| anyhow::anyhow!("GET /api/chaos/invariants: {e}"))?;
    if !answer.status.is_success() {
        bail!("GET /api/chaos/invariants answered {}", answer.status);
    }
    Ok(answer.body)
}

/// What keeps the cluster from being at rest: active faults, pending orders, invariants not all
/// judged held, open breakers or instances not ready. Empty when at rest.
async fn at_rest(traffic: &Traffic, urls: &ClusterUrls, absent: &[String]) -> Vec<String> {
    let client = traffic.client();
    let mut waiting = Vec::new();
    match cluster::chaos_state(client, &urls.control).await {
        Ok(c) if c["faults"].as_array().is_some_and(|f| !f.is_empty()) => {
            waiting.push("TCP faults still active".into());
        }
        Ok(_) => {}
        Err(e) => waiting.push(format!("control API: {e:#}")),
    }
    if let Ok(r) = client.get(format!("{}/api/chaos", urls.bff)).send().await
        && let Ok(c) = r.json::<Value>().await
        && c["faults"].as_array().is_some_and(|f| !f.is_empty())
    {
        waiting.push("HTTP faults still active".into());
    }
    match invariants(traffic, &urls.bff).await {
        Ok(report) => {
            let pending = report["counts"]["orders"]["Pending"].as_i64().unwrap_or(0);
            if pending > 0 {
                waiting.push(format!("{pending} orders pending"));
            }
            for i in report["invariants"].as_array().into_iter().flatten() {
                if i["status"] != "held" {
                    waiting.push(format!(
                        "{} {}{}",
                        i["name"].as_str().unwrap_or("?"),
                        i["status"].as_str().unwrap_or("?"),
                        i["reason"]
                            .as_str()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        Err(e) => waiting.push(format!("invariants: {e:#}")),
    }
    let look = monitor::look(client, &urls.bff, absent).await;
    waiting.extend(look.why);
    waiting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("m").is_err());
    }
}
