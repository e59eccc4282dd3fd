//! `lab bench rotation`: a steady request load through a database-backed route of a catalog on a
//! login leased from OpenBao, while its credentials are rotated by force a few times. Reports the
//! failed requests (the goal is 0), p99 latency of requests that overlapped a rotation ÷ p99 of
//! the others, and the time per rotation with its stages (leased → pool swapped → old drained →
//! old revoked).
//!
//! Self-contained like the other benches: a database `lab_bench` on the given PostgreSQL, a
//! private `bao server -dev` configured as `lab up` configures it, one catalog (`lab run
//! catalog`) pinned to the server core; the load runs in this process. Every lease is revoked
//! before OpenBao is stopped, so no PostgreSQL user outlives the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::measure::{SERVER_CORE, own_exe, quantile, require_quiet, spawn_pinned, wait_ok};
use crate::bootstrap;
use crate::infra::openbao;

#[derive(Args)]
pub struct RotationArgs {
    /// Administrator URL of the PostgreSQL to use (a database `lab_bench` is created in it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Length of the load.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// Concurrent clients, each sending its next request when the last one is answered.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Forced rotations, spread evenly over the load.
    #[arg(long, default_value_t = 3)]
    rotations: u32,
    /// Measure even when the machine is busy (figures will be noisy).
    #[arg(long)]
    allow_busy: bool,
}

const DATABASE: &str = "lab_bench";
/// The catalog's break-glass token for this run only (the admin routes need one).
const ADMIN_TOKEN: &str = "bench-rotation-admin";
/// Every request reads a page of products: a real query each time (lists are not cached).
const ROUTE: &str = "/products?per_page=5";

/// One answered (or failed) request.
struct Sample {
    /// Sent, after the load started.
    start: Duration,
    /// Until its answer.
    latency: Duration,
    ok: bool,
}

pub async fn run(args: RotationArgs) -> anyhow::Result<()> {
    if !args.allow_busy {
        require_quiet().await?;
    }
    anyhow::ensure!(args.seconds >= 5, "--seconds must be at least 5");
    let bao = openbao::preflight().await?;
    let vault_password = format!("bench-{:016x}", rand::random::<u64>());
    bootstrap::prepare(
        &args.pg_admin_url,
        DATABASE,
        lab_db::bootstrap::STATIC_PASSWORD,
        Some(&vault_password),
    )
    .await?;
    let [vault_port, catalog_port] = crate::ports::free_ports().context("choosing ports")?;
    let root = format!("bench-root-{:016x}", rand::random::<u64>());
    let vault_child = spawn_pinned(
        SERVER_CORE,
        &bao,
        &[
            "server",
            "-dev",
            "-dev-no-store-token",
            &format!("-dev-root-token-id={root}"),
            &format!("-dev-listen-address=127.0.0.1:{vault_port}"),
        ],
        &[],
    )?;
    let vault = openbao::client(vault_port, &root)?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    wait_ok(&client, &format!("{}/v1/sys/health", vault.addr())).await?;
    openbao::configure(
        &vault,
        &openbao::EngineTarget {
            host_port: bootstrap::host_port(&args.pg_admin_url)?,
            database: DATABASE,
            admin_user: bootstrap::VAULT_ADMIN,
            admin_password: &vault_password,
        },
    )
    .await?;
    let db_url = bootstrap::service_url(
        &args.pg_admin_url,
        DATABASE,
        "catalog",
        lab_db::bootstrap::STATIC_PASSWORD,
    )?;
    let env: Vec<(String, String)> = [
        ("HTTP__LISTEN", format!("127.0.0.1:{catalog_port}")),
        ("DATABASE__URL", db_url),
        ("DATABASE__VAULT__ADDR", vault.addr().to_owned()),
        ("DATABASE__VAULT__TOKEN", root.clone()),
        ("REDIS__URL", args.redis_url.clone()),
        ("REDIS__PREFIX", "bench:".to_owned()),
        ("AMQP__URL", args.amqp_url.clone()),
        ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("LAB_CATALOG__{k}"), v))
    .chain([("LAB_LOG".to_owned(), "warn".to_owned())])
    .collect();
    let catalog = spawn_pinned(SERVER_CORE, &own_exe()?, &["run", "catalog"], &env)?;
    let base = format!("http://127.0.0.1:{catalog_port}");
    let measured = measure(&client, &base, &args).await;

    // The catalog is killed without revoking; every lease goes before OpenBao (dev mode forgets
    // them, and their users with them).
    drop(catalog);
    if let Err(e) = vault
        .revoke_prefix(&format!("{}/creds", openbao::DB_MOUNT))
        .await
    {
        eprintln!("lab bench rotation: revoking the leases failed: {e}");
    }
    drop(vault_child);
    let (samples, windows, reports) = measured?;
    report(&args, samples, &windows, &reports);
    Ok(())
}

type Measured = (Vec<Sample>, Vec<(Duration, Duration)>, Vec<Value>);

/// Runs the load and the rotations; returns the samples, the rotation windows and their reports.
async fn measure(
    client: &reqwest::Client,
    base: &str,
    args: &RotationArgs,
) -> anyhow::Result<Measured> {
    wait_ok(client, &format!("{base}/readyz")).await?;
    let status: Value = client
        .get(format!("{base}/admin/credentials"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        status["source"] == "vault",
        "the catalog did not lease its login: {status}"
    );
    // Warm-up: the pool fills, the query plans are cached.
    for _ in 0..200 {
        client.get(format!("{base}{ROUTE}")).send().await?;
    }
    let samples = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let started = Instant::now();
    let mut load = Vec::new();
    for _ in 0..args.clients {
        let (client, url, samples, stop) = (
            client.clone(),
            format!("{base}{ROUTE}"),
            samples.clone(),
            stop.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut own = Vec::new();
            while !stop.is_cancelled() {
                let start = started.elapsed();
                let sent = Instant::now();
                let ok = match client.get(&url).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                own.push(Sample {
                    start,
                    latency: sent.elapsed(),
                    ok,
                });
            }
            samples.lock().await.extend(own);
        }));
    }
    let total = Duration::from_secs(args.seconds);
    let spacing = total / (args.rotations + 1);
    let mut windows = Vec::new();
    let mut reports = Vec::new();
    for i in 1..=args.rotations {
        tokio::time::sleep_until((started + spacing * i).into()).await;
        let from = started.elapsed();
        let answer = client
            .post(format!("{base}/admin/credentials/rotate"))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await?;
        let to = started.elapsed();
        let ok = answer.status().is_success();
        let body: Value = answer.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(ok, "a forced rotation failed: {body}");
        windows.push((from, to));
        reports.push(body);
    }
    tokio::time::sleep_until((started + total).into()).await;
    stop.cancel();
    for task in load {
        task.await?;
    }
    let samples = std::mem::take(&mut *samples.lock().await);
    Ok((samples, windows, reports))
}

fn report(
    args: &RotationArgs,
    samples: Vec<Sample>,
    windows: &[(Duration, Duration)],
    reports: &[Value],
) {
    let failed = samples.iter().filter(|s| !s.ok).count();
    let overlaps = |s: &Sample| {
        windows
            .iter()
            .any(|(from, to)| s.start <= *to && s.start + s.latency >= *from)
    };
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let (mut during, mut outside): (Vec<f64>, Vec<f64>) = (Vec::new(), Vec::new());
    for s in samples.iter().filter(|s| s.ok) {
        if overlaps(s) {
            during.push(ms(s.latency));
        } else {
            outside.push(ms(s.latency));
        }
    }
    let p99_during = quantile(&mut during, 0.99);
    let p99_outside = quantile(&mut outside, 0.99);
    let p50_outside = quantile(&mut outside, 0.5);
    let rps = samples.len() as f64 / args.seconds as f64;
    println!(
        "## lab bench rotation ({} clients on `GET {ROUTE}`, {} s, {} forced rotations)\n",
        args.clients, args.seconds, args.rotations
    );
    println!("| measure | value |\n|---|---|");
    println!(
        "| requests (req/s) | {} ({rps:.0}) |\n| **failed requests** | **{failed}** |",
        samples.len()
    );
    println!(
        "| p99 during rotations ÷ p99 outside | **{:.2}** ({p99_during:.1} ms over {} requests ÷ {p99_outside:.1} ms over {}; p50 outside {p50_outside:.1} ms) |",
        p99_during / p99_outside,
        during.len(),
        outside.len()
    );
    for (i, (r, (from, to))) in reports.iter().zip(windows).enumerate() {
        let stages: Vec<String> = r["stages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        format!(
                            "{} {:.0} ms",
                            s["stage"].as_str().unwrap_or("?"),
                            s["after_ms"].as_f64().unwrap_or(f64::NAN)
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "| rotation {} | {:.0} ms ({}; drained on its own: {}) |",
            i + 1,
            ms(*to - *from),
            stages.join(" → "),
            r["drained"]
        );
    }
}
