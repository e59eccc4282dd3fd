//! `lab bench recovery`: how long the cluster takes to be whole again after a fault ends. A BFF →
//! catalog edge is blackholed (and, separately, every connection on it reset) under steady
//! product reads until the BFF's breaker for that replica opens; the fault is then lifted and the
//! BFF's `/api/breakers` and `/api/health` are polled every `--poll-ms` until every breaker is
//! closed and every instance healthy. Median and max over `--rounds` rounds per fault; the goal is
//! under 6 s (the breaker's own 5 s break is most of it). No peer to compare with: the figure is
//! a duration set by policy, not a throughput that moves with the machine.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::measure::{quantile, require_quiet};
use crate::soak::cluster::{Cluster, ClusterUrls, chaos_state};
use crate::soak::monitor;
use crate::soak::traffic::{Traffic, Visitor};

#[derive(Args)]
pub struct RecoveryArgs {
    /// The data directory of the running `lab up` (or where `--up` starts one).
    #[arg(long, default_value = ".lab", env = "LAB_DATA_DIR")]
    data_dir: PathBuf,
    /// Start a cluster for the run (`lab up` with the arguments after `--`) and stop it after.
    #[arg(long)]
    up: bool,
    /// Arguments for `lab up` with `--up` (after `--`).
    #[arg(last = true)]
    up_args: Vec<String>,
    /// Rounds per fault; median and max are reported.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Visitors reading a product in a loop, so the breaker sees calls to judge.
    #[arg(long, default_value_t = 4)]
    readers: u32,
    /// How often breakers and health are polled after the fault ends.
    #[arg(long, default_value_t = 50)]
    poll_ms: u64,
    /// Measure even when the machine is busy.
    #[arg(long)]
    allow_busy: bool,
}

/// How long a round may wait for the breaker to open, and then for the cluster to recover.
const WAIT: Duration = Duration::from_secs(40);
/// The fault's own expiry: a safety net should this process die mid-round (it is lifted by id).
const FAULT_TTL_S: u64 = 90;
/// Pause between a reader's calls: ~10 calls/s per visitor, inside a session's 20/s bucket.
const READ_EVERY: Duration = Duration::from_millis(100);

/// One round's figures, ms from the fault's end.
struct Round {
    /// Fault start → the replica's breaker open.
    opened_ms: f64,
    /// Fault end → that breaker closed.
    closed_ms: f64,
    /// Fault end → every breaker closed and every instance healthy.
    recovered_ms: f64,
}

pub async fn run(args: RecoveryArgs) -> anyhow::Result<()> {
    if !args.allow_busy {
        require_quiet().await?;
    }
    let cluster = if args.up {
        Cluster::start(&args.data_dir, &args.up_args).await?
    } else {
        Cluster::attach(&args.data_dir).await?
    };
    let result = measure(&args, &cluster.urls).await;
    cluster.stop().await;
    result
}

async fn measure(args: &RecoveryArgs, urls: &ClusterUrls) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().no_proxy().build()?;
    let state = chaos_state(&client, &urls.control).await?;
    let (edge, listen) = catalog_edge(&state)?;
    let traffic = Traffic::new(client.clone());
    let product = crate::soak::journeys::Shop::open(traffic.clone(), &urls.bff)
        .await?
        .order_product
        .clone();

    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    for _ in 0..args.readers.max(1) {
        let (traffic, bff, product, stop) = (
            traffic.clone(),
            urls.bff.clone(),
            product.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let mut visitor = Visitor::new(&traffic, &bff);
            let path = format!("/api/products/{product}");
            while !stop.is_cancelled() {
                let _ = visitor.get(&path).await;
                tokio::time::sleep(READ_EVERY).await;
            }
        });
    }
    let poll = Duration::from_millis(args.poll_ms.max(10));
    let absent = monitor::absent_services(&client, urls).await?;
    let faults = [
        (
            "blackhole",
            json!({ "kind": "blackhole", "direction": "both" }),
        ),
        ("reset", json!({ "kind": "reset", "probability": 1.0 })),
    ];
    let mut table = Vec::new();
    for (name, fault) in &faults {
        let mut rounds = Vec::new();
        for _ in 0..args.rounds.max(1) {
            rounds.push(round(&client, urls, &absent, (&edge, &listen), fault, poll).await?);
        }
        table.push((*name, rounds));
    }
    stop.cancel();

    println!(
        "## lab bench recovery ({} rounds per fault on `{edge}`, {} readers, polled every {} ms)\n",
        args.rounds,
        args.readers,
        poll.as_millis()
    );
    println!(
        "| fault | fault start → breaker open, median | fault end → that breaker closed, median / max | **fault end → all breakers closed and every instance healthy, median / max** (goal < 6 s) | rounds (ms) |"
    );
    println!("|---|---|---|---|---|");
    for (name, rounds) in &table {
        let mut opened: Vec<f64> = rounds.iter().map(|r| r.opened_ms).collect();
        let mut closed: Vec<f64> = rounds.iter().map(|r| r.closed_ms).collect();
        let mut recovered: Vec<f64> = rounds.iter().map(|r| r.recovered_ms).collect();
        let each: Vec<String> = recovered.iter().map(|ms| format!("{ms:.0}")).collect();
        println!(
            "| {name} | {:.0} ms | {:.0} / {:.0} ms | **{:.0} / {:.0} ms** | {} |",
            quantile(&mut opened, 0.5),
            quantile(&mut closed, 0.5),
            quantile(&mut closed, 1.0),
            quantile(&mut recovered, 0.5),
            quantile(&mut recovered, 1.0),
            each.join(", ")
        );
    }
    Ok(())
}

/// The first BFF → catalog edge (by name) and the address the BFF reaches it at.
fn catalog_edge(state: &Value) -> anyhow::Result<(String, String)> {
    let mut edges: Vec<(String, String)> = state["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let targets: Vec<&str> = e["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            targets.first() == Some(&"bff")
                && targets.get(1).is_some_and(|t| t.starts_with("catalog"))
        })
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["listen"].as_str()?.to_owned(),
            ))
        })
        .collect();
    edges.sort();
    edges
        .into_iter()
        .next()
        .context("the cluster has no BFF → catalog edge (is it a `lab up` cluster?)")
}

/// The state of the breaker whose endpoint is `listen`, in a `GET /api/breakers` body.
fn breaker_state(body: &Value, listen: &str) -> Option<String> {
    body["breakers"]
        .as_array()?
        .iter()
        .find(|b| b["endpoint"].as_str().is_some_and(|e| e.contains(listen)))
        .and_then(|b| b["state"].as_str().map(str::to_owned))
}

async fn breakers(client: &reqwest::Client, bff: &str) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("{bff}/api/breakers"))
        .send()
        .await?
        .json()
        .await?)
}

/// One round: wait for a clean cluster, apply `fault` on `edge`, wait for its breaker to open,
/// lift the fault, time the recovery.
async fn round(
    client: &reqwest::Client,
    urls: &ClusterUrls,
    absent: &[String],
    (edge, listen): (&str, &str),
    fault: &Value,
    poll: Duration,
) -> anyhow::Result<Round> {
    let deadline = Instant::now() + WAIT;
    while !monitor::look(client, &urls.bff, absent).await.clean {
        if Instant::now() >= deadline {
            bail!("the cluster was not clean within {WAIT:?} before a round");
        }
        tokio::time::sleep(poll).await;
    }
    let applied: Value = client
        .post(format!("{}/chaos/faults", urls.control))
        .json(&json!({
            "scope": { "type": "edge", "name": edge },
            "fault": fault,
            "ttl_s": FAULT_TTL_S,
            "requester": "admin",
        }))
        .send()
        .await?
        .error_for_status()
        .context("applying the fault")?
        .json()
        .await?;
    let id = applied["id"].clone();
    let id = id.as_str().map_or_else(|| id.to_string(), str::to_owned);
    let lift = async || {
        client
            .delete(format!("{}/chaos/faults/{id}", urls.control))
            .send()
            .await
    };
    let started = Instant::now();
    let deadline = started + WAIT;
    loop {
        let b = breakers(client, &urls.bff).await;
        if b.ok()
            .and_then(|b| breaker_state(&b, listen))
            .is_some_and(|s| s == "open")
        {
            break;
        }
        if Instant::now() >= deadline {
            let _ = lift().await;
            bail!("the breaker for {edge} did not open within {WAIT:?} of {fault}");
        }
        tokio::time::sleep(poll).await;
    }
    let opened_ms = started.elapsed().as_secs_f64() * 1000.0;
    let lifted = lift().await.context("lifting the fault")?;
    let ended = Instant::now();
    if !lifted.status().is_success() {
        bail!("lifting the fault answered {}", lifted.status());
    }
    let deadline = ended + WAIT;
    let mut closed_ms = None;
    loop {
        let sample = monitor::look(client, &urls.bff, absent).await;
        if closed_ms.is_none()
            && !sample
                .why
                .iter()
                .any(|w| w.starts_with("breaker") && w.contains(listen))
            && !sample.why.iter().any(|w| w.starts_with("breakers:"))
        {
            closed_ms = Some(sample.at.saturating_duration_since(ended));
        }
        if sample.clean {
            let recovered = sample.at.saturating_duration_since(ended);
            return Ok(Round {
                opened_ms,
                closed_ms: closed_ms.unwrap_or(recovered).as_secs_f64() * 1000.0,
                recovered_ms: recovered.as_secs_f64() * 1000.0,
            });
        }
        if Instant::now() >= deadline {
            bail!(
                "not recovered within {WAIT:?} of lifting {fault} on {edge}: {}",
                sample.why.join("; ")
            );
        }
        tokio::time::sleep(poll).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bff_to_catalog_edge_and_its_breaker_are_found_by_address() {
        let state = json!({ "edges": [
            { "name": "catalog-1→postgres", "listen": "127.0.0.1:20001", "targets": ["catalog-1", "postgres"] },
            { "name": "bff→catalog-2", "listen": "127.0.0.1:20003", "targets": ["bff", "catalog-2"] },
            { "name": "bff→catalog-1", "listen": "127.0.0.1:20002", "targets": ["bff", "catalog-1"] },
        ]});
        let breakers = json!({ "breakers": [
            { "service": "catalog", "endpoint": "http://127.0.0.1:20003", "state": "closed" },
            { "service": "catalog", "endpoint": "http://127.0.0.1:20002", "state": "open" },
        ]});

        let (edge, listen) = catalog_edge(&state).unwrap();

        assert_eq!(
            (edge.as_str(), listen.as_str()),
            ("bff→catalog-1", "127.0.0.1:20002")
        );
        assert_eq!(breaker_state(&breakers, &listen).as_deref(), Some("open"));
    }
}
