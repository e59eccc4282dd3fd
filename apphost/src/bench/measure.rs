//! Tools every benchmark shares: a quiet-machine check, pinned child processes, wrk runs parsed,
//! medians and percentiles.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The core the system under test (and its peer) runs on.
pub const SERVER_CORE: &str = "1";
/// The core the load generator runs on.
pub const LOAD_CORE: &str = "0";

/// Busy share of all cores over one second, from `/proc/stat`.
pub async fn busy_share() -> anyhow::Result<f64> {
    async fn sample() -> anyhow::Result<(u64, u64)> {
        let stat = tokio::fs::read_to_string("/proc/stat").await?;
        let cpu = stat.lines().next().context("empty /proc/stat")?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Ok((fields.iter().sum(), idle))
    }
    let (t0, i0) = sample().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (t1, i1) = sample().await?;
    let total = (t1 - t0).max(1) as f64;
    Ok(1.0 - (i1 - i0) as f64 / total)
}

/// Refuses to measure on a busy machine: a build elsewhere halves a figure.
pub async fn require_quiet() -> anyhow::Result<()> {
    let busy = busy_share().await?;
    // 15 %: background daemons stay under it; a compile or another benchmark does not.
    if busy > 0.15 {
        bail!(
            "the machine is busy ({:.0} % CPU over 1 s): stop other work and run again",
            busy * 100.0
        );
    }
    Ok(())
}

/// This binary, to start services and peers from.
pub fn own_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("locating the lab binary")
}

/// Starts `exe args` pinned to `core` with `envs`, its output discarded; killed when dropped.
pub fn spawn_pinned(
    core: &str,
    exe: &PathBuf,
    args: &[&str],
    envs: &[(String, String)],
) -> anyhow::Result<Child> {
    spawn_pinned_logged(core, exe, args, envs, None)
}

/// [`spawn_pinned`], with stdout and stderr appended to `log` when one is given.
pub fn spawn_pinned_logged(
    core: &str,
    exe: &PathBuf,
    args: &[&str],
    envs: &[(String, String)],
    log: Option<&Path>,
) -> anyhow::Result<Child> {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(core).arg(exe).args(args);
    cmd.envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let (out, err) = match log {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            (Stdio::from(file.try_clone()?), Stdio::from(file))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    cmd.stdout(out).stderr(err).kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("starting {} (is taskset installed?)", exe.display()))
}

/// Polls `url` until it answers 200 or 20 s pass.
pub async fn wait_ok(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        if let Ok(r) = client.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{url} did not answer 200 within 20 s")
}

/// One wrk run.
#[derive(Debug, Clone, Copy)]
pub struct WrkResult {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Non-2xx/3xx responses and socket errors.
    pub errors: u64,
}

fn parse_duration_ms(s: &str) -> Option<f64> {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// Parses wrk's `--latency` report.
pub fn parse_wrk(out: &str) -> Option<WrkResult> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0;
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse().ok(),
            ["50%", v] => p50 = parse_duration_ms(v),
            ["99%", v] => p99 = parse_duration_ms(v),
            ["Non-2xx", "or", "3xx", "responses:", v] => errors += v.parse::<u64>().unwrap_or(0),
            ["Socket", "errors:", rest @ ..] => {
                errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Some(WrkResult {
        rps: rps?,
        p50_ms: p50?,
        p99_ms: p99?,
        errors,
    })
}

/// Runs wrk pinned to the load core: one thread, `connections` connections, `seconds` long,
/// every request carrying `headers` (`"Cookie: a=b"`), as a client that keeps what the server
/// gave it would send them.
pub async fn wrk_with_headers(
    url: &str,
    connections: u32,
    seconds: u32,
    headers: &[String],
) -> anyhow::Result<WrkResult> {
    let out = Command::new("taskset")
        .args([
            "-c",
            LOAD_CORE,
            "wrk",
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
        ])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .arg(url)
        .output()
        .await
        .context("running wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).with_context(|| format!("unreadable wrk output: {text}"))
}

/// The median of three wrk runs (by requests/s), after a 2 s warm-up.
pub async fn wrk_median(url: &str, connections: u32, seconds: u32) -> anyhow::Result<WrkResult> {
    wrk_median_with_headers(url, connections, seconds, &[]).await
}

/// [`wrk_median`] with `headers` on every request.
pub async fn wrk_median_with_headers(
    url: &str,
    connections: u32,
    seconds: u32,
    headers: &[String],
) -> anyhow::Result<WrkResult> {
    wrk_with_headers(url, connections, 2, headers).await?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(wrk_with_headers(url, connections, seconds, headers).await?);
    }
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    Ok(runs[1])
}

/// One wrk target of [`wrk_medians_interleaved`]: URL, connections, extra headers.
pub type WrkTarget<'a> = (&'a str, u32, &'a [String]);

/// The median of 3 runs of each target, the runs taken in turn (A, B, C, A, B, C, …) after a
/// 2 s warm-up of each, with every run kept. On a machine whose speed drifts during the minute
/// measured (this one's moves by a fifth in a day), back-to-back triplets put the drift between
/// targets; taken in turn, it weighs on each alike, and the runs side by side show the spread.
pub async fn wrk_medians_interleaved(
    targets: &[WrkTarget<'_>],
    seconds: u32,
) -> anyhow::Result<Vec<(WrkResult, Vec<WrkResult>)>> {
    for (url, connections, headers) in targets {
        wrk_with_headers(url, *connections, 2, headers).await?;
    }
    let mut runs: Vec<Vec<WrkResult>> = vec![Vec::new(); targets.len()];
    for _ in 0..3 {
        for ((url, connections, headers), runs) in targets.iter().zip(&mut runs) {
            runs.push(wrk_with_headers(url, *connections, seconds, headers).await?);
        }
    }
    Ok(runs
        .into_iter()
        .map(|runs| {
            let mut sorted = runs.clone();
            sorted.sort_by(|a, b| a.rps.total_cmp(&b.rps));
            (sorted[1], runs)
        })
        .collect())
}

/// The `q`-quantile (0–1) of `samples`, sorted in place.
pub fn quantile(samples: &mut [f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_by(f64::total_cmp);
    let rank = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[rank]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrk_latency_report_is_parsed() {
        let out = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  Latency Distribution\n     50%    1.19ms\n     75%    1.50ms\n     90%  800.00us\n     99%    3.10ms\n  512000 requests in 10.00s, 90.00MB read\n  Non-2xx or 3xx responses: 7\nRequests/sec:  51200.12\nTransfer/sec:      9.00MB\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!(r.rps, 51200.12);
        assert_eq!(r.p50_ms, 1.19);
        assert_eq!(r.p99_ms, 3.10);
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 51.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
    }
}
