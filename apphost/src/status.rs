//! `lab status`, and the table both it and `lab up` print.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::datadir::{ApphostInfo, DataDir};
use crate::table::{Health, ProcessInfo};

/// Arguments of `lab status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The data directory of the apphost to ask.
    #[arg(long, default_value = ".lab", env = "LAB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Print the raw JSON of `GET /processes`.
    #[arg(long)]
    pub json: bool,
}

/// Why `lab status` has nothing to show.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("no apphost is running for {0}: start one with `lab up`")]
    NotRunning(String),
}

/// Asks the running apphost for its processes and prints them.
pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let dir = DataDir::existing(&args.data_dir);
    let not_running = || StatusError::NotRunning(dir.root().display().to_string());
    let info: ApphostInfo = dir
        .read_json(ApphostInfo::FILE)
        .ok()
        .flatten()
        .ok_or_else(not_running)?;
    let rows = fetch(&info.control_url).await.map_err(|_| not_running())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!("apphost pid {}, BFF {}", info.pid, info.bff_url);
    for line in render(&rows) {
        println!("{line}");
    }
    Ok(())
}

/// `GET <control>/processes`.
pub async fn fetch(control_url: &str) -> anyhow::Result<Vec<ProcessInfo>> {
    let client = reqwest::Client::builder()
        // The control API is on loopback and answers from memory (plus a TCP probe per server).
        .timeout(Duration::from_secs(5))
        .build()?;
    let rows = client
        .get(format!("{control_url}/processes"))
        .send()
        .await
        .context("control API unreachable")?
        .error_for_status()?
        .json()
        .await?;
    Ok(rows)
}

/// The process table as aligned lines.
pub fn render(rows: &[ProcessInfo]) -> Vec<String> {
    let width = rows.iter().map(|r| r.name.len()).max().unwrap_or(4).max(4);
    let mut lines = vec![format!(
        "{:<width$}  {:>7}  {:>5}  {:<9}  {:>8}  {:>8}  {:>7}  URL",
        "NAME", "PID", "PORT", "HEALTH", "RESTARTS", "UPTIME", "READY"
    )];
    for r in rows {
        lines.push(format!(
            "{:<width$}  {:>7}  {:>5}  {:<9}  {:>8}  {:>8}  {:>7}  {}",
            r.name,
            r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            r.port,
            r.health.as_str(),
            r.restarts,
            r.uptime_s
                .map(|s| format!("{s:.1}s"))
                .unwrap_or_else(|| "-".into()),
            r.ready_ms
                .map(|ms| format!("{ms}ms"))
                .unwrap_or_else(|| "-".into()),
            r.url,
        ));
    }
    lines
}

/// The live view while starting: the table plus a progress line.
pub fn live(rows: &[ProcessInfo], elapsed: Duration) -> Vec<String> {
    let services: Vec<&ProcessInfo> = rows.iter().filter(|r| r.kind == "service").collect();
    let ready = services
        .iter()
        .filter(|r| r.health == Health::Ready)
        .count();
    let mut lines = render(rows);
    lines.push(format!(
        "starting: {ready}/{} ready, {:.1} s",
        services.len(),
        elapsed.as_secs_f64()
    ));
    lines
}
