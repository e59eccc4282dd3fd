//! `lab bench catalog`: (1) cached product GETs on one replica ÷ a bare axum server's GETs, same
//! run, same core; (2) the cross-replica stale window: write on replica A, time until replica B
//! first serves the new version, over many writes; (3) concurrent writers on one row: requests/s
//! and the share answered 412.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use lab_catalog::seed::seed_id;
use serde_json::Value;

use super::measure::{
    SERVER_CORE, own_exe, quantile, require_quiet, spawn_pinned, wait_ok, wrk_median,
};
use crate::bootstrap;

#[derive(Args)]
pub struct CatalogArgs {
    /// Administrator URL of the PostgreSQL to use (a database `lab_bench` is created in it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    pg_admin_url: String,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Length of each wrk run (the median of 3 is reported).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Writes measured for the stale window.
    #[arg(long, default_value_t = 1000)]
    writes: u32,
    /// Concurrent writers on one row.
    #[arg(long, default_value_t = 16)]
    writers: u32,
    /// Measure even when the machine is busy (figures will be noisy).
    #[arg(long)]
    allow_busy: bool,
}

const DATABASE: &str = "lab_bench";

fn replica_env(
    args: &CatalogArgs,
    db_url: &str,
    port: u16,
    replica: u16,
    peers: &str,
) -> Vec<(String, String)> {
    [
        ("HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("HTTP__REPLICA", replica.to_string()),
        ("DATABASE__URL", db_url.to_owned()),
        ("REDIS__URL", args.redis_url.clone()),
        ("REDIS__PREFIX", "bench:".to_owned()),
        ("AMQP__URL", args.amqp_url.clone()),
        ("PEERS", peers.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (format!("LAB_CATALOG__{k}"), v))
    .chain([("LAB_LOG".to_owned(), "warn".to_owned())])
    .collect()
}

pub async fn run(args: CatalogArgs) -> anyhow::Result<()> {
    if !args.allow_busy {
        require_quiet().await?;
    }
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
        "catalog",
        lab_db::bootstrap::STATIC_PASSWORD,
    )?;
    let exe = own_exe()?;
    let [pa, pb, pp] = crate::ports::free_ports().context("choosing ports")?;
    let peers = format!("http://127.0.0.1:{pa},http://127.0.0.1:{pb}");
    let client = reqwest::Client::builder().no_proxy().build()?;

    let _peer = spawn_pinned(
        SERVER_CORE,
        &exe,
        &["bench", "peer", "--listen", &format!("127.0.0.1:{pp}")],
        &[],
    )?;
    let _a = spawn_pinned(
        SERVER_CORE,
        &exe,
        &["run", "catalog"],
        &replica_env(&args, &db_url, pa, 1, &peers),
    )?;
    let a = format!("http://127.0.0.1:{pa}");
    wait_ok(&client, &format!("{a}/readyz")).await?;
    wait_ok(&client, &format!("http://127.0.0.1:{pp}/product")).await?;

    // (1) Throughput: the same product read over and over, so every request is an L1 hit.
    let product = format!("{a}/products/{}", seed_id("LAB-MUG"));
    let first = client.get(&product).send().await?;
    let size = first.bytes().await?.len();
    let catalog = wrk_median(&product, 64, args.seconds).await?;
    let axum = wrk_median(&format!("http://127.0.0.1:{pp}/product"), 64, args.seconds).await?;

    // (2) and (3) need the second replica.
    let _b = spawn_pinned(
        SERVER_CORE,
        &exe,
        &["run", "catalog"],
        &replica_env(&args, &db_url, pb, 2, &peers),
    )?;
    let b = format!("http://127.0.0.1:{pb}");
    wait_ok(&client, &format!("{b}/readyz")).await?;
    let mut windows = stale_windows(&client, &a, &b, args.writes).await?;
    let (writes_per_s, share_412, total) =
        concurrent_writers(&client, &[a.clone(), b.clone()], args.writers, args.seconds).await?;

    println!("## lab bench catalog\n");
    println!("| measure | Lab | peer | ratio |\n|---|---|---|---|");
    println!(
        "| cached `GET /products/{{id}}` ({size} B), req/s | {:.0} (p50 {:.2} ms, p99 {:.2} ms, errors {}) | bare axum, same body size: {:.0} (p99 {:.2} ms) | **{:.2}** |",
        catalog.rps,
        catalog.p50_ms,
        catalog.p99_ms,
        catalog.errors,
        axum.rps,
        axum.p99_ms,
        catalog.rps / axum.rps
    );
    println!(
        "| stale window A→B over {} writes | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms | | |",
        windows.len(),
        quantile(&mut windows, 0.5),
        quantile(&mut windows, 0.99),
        quantile(&mut windows, 1.0)
    );
    println!(
        "| {} concurrent writers on one inventory row, {} s | {writes_per_s:.0} writes/s, {:.1} % answered 412 ({total} writes) | | |",
        args.writers,
        args.seconds,
        share_412 * 100.0
    );
    Ok(())
}

/// Writes on `a`, then reads `b` until it serves the new version; returns each wait in ms.
async fn stale_windows(
    client: &reqwest::Client,
    a: &str,
    b: &str,
    writes: u32,
) -> anyhow::Result<Vec<f64>> {
    let path = format!("/products/{}", seed_id("DEMO-CACHE"));
    let mut etag = client
        .get(format!("{a}{path}"))
        .send()
        .await?
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .context("no ETag on the product")?;
    let mut windows = Vec::with_capacity(writes as usize);
    for i in 0..writes {
        // B holds the current version in L1: exactly what an invalidation has to fix.
        client.get(format!("{b}{path}")).send().await?;
        let r = client
            .patch(format!("{a}{path}"))
            .header("if-match", &etag)
            .json(&serde_json::json!({ "price_minor": 1000 + (i % 2) }))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("write {i} answered {}", r.status());
        }
        etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .context("no ETag")?;
        let version = r.json::<Value>().await?["version"]
            .as_i64()
            .context("no version")?;
        let written = Instant::now();
        loop {
            let seen: Value = client
                .get(format!("{b}{path}"))
                .send()
                .await?
                .json()
                .await?;
            if seen["version"].as_i64() >= Some(version) {
                windows.push(written.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if written.elapsed() > Duration::from_secs(5) {
                bail!("replica B never served version {version}");
            }
        }
    }
    Ok(windows)
}

/// `writers` tasks, each reading the inventory row's ETag and writing with it, for `seconds`.
async fn concurrent_writers(
    client: &reqwest::Client,
    replicas: &[String],
    writers: u32,
    seconds: u32,
) -> anyhow::Result<(f64, f64, u64)> {
    let path = format!("/products/{}/inventory", seed_id("DEMO-RACE"));
    let (ok, stale, other) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    let tasks = (0..writers).map(|w| {
        let url = format!("{}{path}", replicas[w as usize % replicas.len()]);
        let (client, ok, stale, other) = (client.clone(), ok.clone(), stale.clone(), other.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while Instant::now() < deadline {
                let Ok(r) = client.get(&url).send().await else {
                    continue;
                };
                let Some(etag) = r.headers().get("etag").cloned() else {
                    continue;
                };
                n += 1;
                let put = client
                    .put(&url)
                    .header("if-match", etag)
                    .json(&serde_json::json!({ "on_hand": 100 + (n % 50) }))
                    .send()
                    .await;
                match put.map(|r| r.status().as_u16()) {
                    Ok(200) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(412) => stale.fetch_add(1, Ordering::Relaxed),
                    _ => other.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    });
    futures::future::join_all(tasks).await;
    let (ok, stale, other) = (
        ok.load(Ordering::Relaxed),
        stale.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    if other > 0 {
        bail!("{other} writes answered neither 200 nor 412");
    }
    let total = ok + stale;
    Ok((
        total as f64 / f64::from(seconds),
        stale as f64 / total.max(1) as f64,
        total,
    ))
}
