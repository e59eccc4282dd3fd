//! `lab bench bff`: (1) proxied `GET /api/products/{id}` through the BFF ÷ nginx `proxy_pass`
//! (keep-alive upstream) to the same upstream (the bare axum peer), same run, same core, with wrk
//! sending back the session cookie of a first request as a browser does, and again without it
//! (every request a first visit); (2) the
//! latency the hop adds, p50/p99, at a moderate load, against calling the upstream directly;
//! (3) rate-limit accuracy across two BFF replicas sharing Redis: one session's burst split over
//! both, allowed count against the configured capacity.
//!
//! The BFF runs as `lab up` runs it (sessions, the shared Redis rate limit, replay, breakers,
//! the live stream), except that its default bucket is raised out of the way for (1) and (2): the
//! benchmark's one session (or, without the cookie, its one address) would otherwise spend its
//! bucket in a fraction of a second.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use tokio::process::Command;

use super::measure::{
    SERVER_CORE, WrkResult, own_exe, require_quiet, spawn_pinned, wait_ok, wrk_medians_interleaved,
};

#[derive(Args)]
pub struct BffArgs {
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Length of each wrk run (the median of 3 is reported).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Capacity of the bucket the accuracy check uses.
    #[arg(long, default_value_t = 50)]
    capacity: u32,
    /// Requests of the accuracy burst (split over both replicas).
    #[arg(long, default_value_t = 200)]
    burst: u32,
    /// Measure even when the machine is busy (figures will be noisy).
    #[arg(long)]
    allow_busy: bool,
}

/// The product path both proxies serve.
const PATH: &str = "/products/0191e0a4-6c61-7b2d-8a3e-5f2c9d1e4b7a";
/// A fixed session key, so the two replicas accept each other's cookies.
const SESSION_KEY: &str = "bench-session-key-bench-session-key-0123456789";

fn bff_env(
    port: u16,
    replica: u16,
    upstream: &str,
    redis: &str,
    capacity: u32,
    refill: f64,
) -> Vec<(String, String)> {
    [
        ("HTTP__LISTEN", format!("127.0.0.1:{port}")),
        ("HTTP__REPLICA", replica.to_string()),
        ("REDIS__URL", redis.to_owned()),
        (
            "REDIS__PREFIX",
            format!("bench-bff-{}:", std::process::id()),
        ),
        ("UPSTREAMS__CATALOG", upstream.to_owned()),
        ("LIVE__TAP", "false".to_owned()),
        ("JOURNEYS__ENABLED", "false".to_owned()),
        ("EDGE__SESSION__KEY", SESSION_KEY.to_owned()),
        ("EDGE__RATE_LIMIT__DEFAULT__CAPACITY", capacity.to_string()),
        (
            "EDGE__RATE_LIMIT__DEFAULT__REFILL_PER_S",
            refill.to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (format!("LAB_BFF__{k}"), v))
    .chain([("LAB_LOG".to_owned(), "warn".to_owned())])
    .collect()
}

pub async fn run(args: BffArgs) -> anyhow::Result<()> {
    if !args.allow_busy {
        require_quiet().await?;
    }
    let exe = own_exe()?;
    let [peer_port, nginx_port, bff_port, a_port, b_port] =
        crate::ports::free_ports().context("choosing ports")?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let peer = format!("http://127.0.0.1:{peer_port}");

    let _peer = spawn_pinned(
        SERVER_CORE,
        &exe,
        &[
            "bench",
            "peer",
            "--listen",
            &format!("127.0.0.1:{peer_port}"),
        ],
        &[],
    )?;
    wait_ok(&client, &format!("{peer}{PATH}")).await?;
    let nginx_dir = start_nginx(nginx_port, peer_port).await?;
    let nginx = format!("http://127.0.0.1:{nginx_port}");
    wait_ok(&client, &format!("{nginx}{PATH}")).await?;
    // Out of the benchmark's way: a billion tokens, refilled faster than any load here.
    let _bff = spawn_pinned(
        SERVER_CORE,
        &exe,
        &["run", "bff"],
        &bff_env(
            bff_port,
            1,
            &peer,
            &args.redis_url,
            1_000_000_000,
            1_000_000_000.0,
        ),
    )?;
    let bff = format!("http://127.0.0.1:{bff_port}");
    wait_ok(&client, &format!("{bff}/api{PATH}")).await?;

    // (1) Throughput, same upstream, same core, same wrk. A browser sends back the cookie its
    // first answer set, so the main row does too; the cookie-less row is every request a first
    // visit (a session signed per request, every request on the address's bucket).
    let url = format!("{bff}/api{PATH}");
    let cookie = vec![format!(
        "Cookie: {}",
        session_cookie(&client.get(&url).send().await?)?
    )];
    let nginx_url = format!("{nginx}{PATH}");
    let direct_url = format!("{peer}{PATH}");
    // Taken in turn, so the machine's drift weighs on each alike.
    let measured = wrk_medians_interleaved(
        &[(&url, 64, &cookie), (&nginx_url, 64, &[]), (&url, 64, &[])],
        args.seconds,
    )
    .await?;
    let [
        (through_bff, bff_runs),
        (through_nginx, nginx_runs),
        (cookieless, _),
    ] = <[_; 3]>::try_from(measured).map_err(|_| anyhow::anyhow!("three targets measured"))?;
    // (2) Added latency at a moderate load (8 connections): the hop, not the queue.
    let latency = wrk_medians_interleaved(
        &[
            (&direct_url, 8, &[]),
            (&url, 8, &cookie),
            (&nginx_url, 8, &[]),
        ],
        args.seconds,
    )
    .await?;
    let [(direct_8, _), (bff_8, _), (nginx_8, _)] =
        <[_; 3]>::try_from(latency).map_err(|_| anyhow::anyhow!("three targets measured"))?;
    stop_nginx(&nginx_dir).await;

    // (3) Two replicas, one session, one bucket that does not refill during the burst.
    let _a = spawn_pinned(
        SERVER_CORE,
        &exe,
        &["run", "bff"],
        &bff_env(a_port, 1, &peer, &args.redis_url, args.capacity, 0.001),
    )?;
    let _b = spawn_pinned(
        SERVER_CORE,
        &exe,
        &["run", "bff"],
        &bff_env(b_port, 2, &peer, &args.redis_url, args.capacity, 0.001),
    )?;
    let (a, b) = (
        format!("http://127.0.0.1:{a_port}"),
        format!("http://127.0.0.1:{b_port}"),
    );
    wait_ok(&client, &format!("{a}/api/health")).await?;
    wait_ok(&client, &format!("{b}/api/health")).await?;
    let (allowed, refused) = burst(&client, &a, &b, args.burst).await?;

    println!("## lab bench bff\n");
    println!("| measure | Lab BFF | nginx `proxy_pass` | ratio |\n|---|---|---|---|");
    let row = |what: &str, lab: &WrkResult| {
        println!(
            "| {what} | {} | {} | **{:.2}** |",
            cell(lab),
            cell(&through_nginx),
            lab.rps / through_nginx.rps
        );
    };
    row(
        "proxied `GET /api/products/{id}`, 64 connections, req/s; the client sends its session cookie back",
        &through_bff,
    );
    row(
        "the same without the cookie (every request a first visit: a session signed, the address's bucket)",
        &cookieless,
    );
    let added = |via: &WrkResult| (via.p50_ms - direct_8.p50_ms, via.p99_ms - direct_8.p99_ms);
    let (bff_p50, bff_p99) = added(&bff_8);
    let (nginx_p50, nginx_p99) = added(&nginx_8);
    println!(
        "| added latency per hop at 8 connections (vs the upstream directly: p50 {:.3} ms, p99 {:.3} ms) | p50 {bff_p50:+.3} ms, p99 {bff_p99:+.3} ms | p50 {nginx_p50:+.3} ms, p99 {nginx_p99:+.3} ms | |",
        direct_8.p50_ms, direct_8.p99_ms
    );
    println!(
        "| rate limit across 2 replicas: one session, capacity {}, burst of {} split over both | {allowed} allowed, {refused} refused (goal {} ± 1) | | |",
        args.capacity, args.burst, args.capacity
    );
    let rounds: Vec<String> = bff_runs
        .iter()
        .zip(&nginx_runs)
        .map(|(bff, nginx)| format!("{:.2}", bff.rps / nginx.rps))
        .collect();
    println!(
        "\nEach run's ratio, with the cookie, BFF and nginx taken in turn: {}",
        rounds.join(", ")
    );
    if allowed.abs_diff(args.capacity) > 1 {
        bail!(
            "the shared bucket allowed {allowed}, not {} ± 1",
            args.capacity
        );
    }
    Ok(())
}

/// One wrk result as a table cell.
fn cell(r: &WrkResult) -> String {
    format!(
        "{:.0} (p50 {:.2} ms, p99 {:.2} ms, errors {})",
        r.rps, r.p50_ms, r.p99_ms, r.errors
    )
}

/// The `name=value` of the session cookie an answer sets.
fn session_cookie(answer: &reqwest::Response) -> anyhow::Result<String> {
    answer
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .context("no session cookie")
}

/// One session's `n` requests alternating between `a` and `b`, 16 at a time; (allowed, refused).
async fn burst(client: &reqwest::Client, a: &str, b: &str, n: u32) -> anyhow::Result<(u32, u32)> {
    // The first answer issues the session; it is spent from the bucket like any other request.
    let first = client.get(format!("{a}/api{PATH}")).send().await?;
    let cookie = session_cookie(&first)?;
    let mut allowed = u32::from(first.status().is_success());
    let mut refused = u32::from(first.status() == 429);
    let urls: Vec<String> = (1..n)
        .map(|i| format!("{}/api{PATH}", if i % 2 == 0 { a } else { b }))
        .collect();
    for chunk in urls.chunks(16) {
        let answers = futures::future::join_all(
            chunk
                .iter()
                .map(|url| client.get(url).header("cookie", &cookie).send()),
        )
        .await;
        for answer in answers {
            match answer?.status().as_u16() {
                200 => allowed += 1,
                429 => refused += 1,
                other => bail!("a burst request answered {other}"),
            }
        }
    }
    Ok((allowed, refused))
}

/// nginx with one worker on the server core, `proxy_pass` to the peer over a keep-alive pool
/// (BENCH.md's configuration); its files in a temporary directory.
async fn start_nginx(port: u16, upstream_port: u16) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lab-bench-nginx-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("logs"))?;
    let conf = format!(
        "worker_processes 1;\nworker_cpu_affinity {mask};\ndaemon on;\npid {dir}/nginx.pid;\nerror_log {dir}/logs/error.log warn;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  keepalive_requests 1000000;\n\
         upstream peer {{ server 127.0.0.1:{upstream_port}; keepalive 64; keepalive_requests 1000000; }}\n\
         server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://peer;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n\
         client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;\n}}\n",
        mask = if SERVER_CORE == "1" { "10" } else { "01" },
        dir = dir.display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf)?;
    let status = Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .status()
        .await
        .context("starting nginx (LAB_SETUP_BENCH=1 scripts/setup installs it)")?;
    if !status.success() {
        bail!("nginx did not start: see {}/logs/error.log", dir.display());
    }
    Ok(dir)
}

async fn stop_nginx(dir: &std::path::Path) {
    let _ = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-s")
        .arg("stop")
        .status()
        .await;
}
