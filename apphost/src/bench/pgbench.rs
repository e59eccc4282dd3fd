//! The database peer: pgbench TPC-B against the same PostgreSQL the services use, in a database
//! of its own, its client pinned to the load core like every load generator here.

use anyhow::{Context, bail};
use tokio::process::Command;

use super::measure::LOAD_CORE;

/// pgbench's own database, next to the services' `lab_bench`.
const DATABASE: &str = "lab_bench_pgbench";

/// `pgbench -i -s scale`, then `rounds` rounds of TPC-B `-c8 -j2 -T seconds` (BENCH.md's peer
/// figure); the tps of each round.
pub async fn tpcb(
    admin_url: &str,
    scale: u32,
    seconds: u32,
    rounds: u32,
) -> anyhow::Result<Vec<f64>> {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(admin_url)
        .await
        .context("connecting to PostgreSQL as administrator")?;
    lab_db::bootstrap::ensure_database(&mut admin, DATABASE, None)
        .await
        .context("creating the pgbench database")?;
    let _ = admin.close().await;
    let mut url = reqwest::Url::parse(admin_url).context("--pg-admin-url")?;
    url.set_path(&format!("/{DATABASE}"));
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
    for _ in 0..rounds {
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
