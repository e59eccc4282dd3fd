//! The cluster a soak (or `lab bench recovery`) runs against: the `lab up` already running on a
//! data directory, found through its `apphost.json`, or one started here (`--up`) and stopped
//! with `lab down` afterwards, private infrastructure included.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::datadir::{ApphostInfo, DataDir};
use crate::table::Health;

/// How long a `lab up` started here may take until every service is ready: RabbitMQ's first boot
/// alone is 15–20 s, and the services build their pools and queues after it.
const UP_WITHIN: Duration = Duration::from_secs(180);

/// The running cluster's two addresses.
#[derive(Debug, Clone)]
pub struct ClusterUrls {
    /// The BFF's public URL: every journey goes through it.
    pub bff: String,
    /// The apphost's loopback control API: TCP faults and process restarts.
    pub control: String,
}

/// A cluster in use; when this process started it, dropping it is not enough: call
/// [`Cluster::stop`].
pub struct Cluster {
    pub urls: ClusterUrls,
    /// The `lab up` child, when `--up` started it.
    started: Option<tokio::process::Child>,
    data_dir: PathBuf,
}

impl Cluster {
    /// The `lab up` running on `data_dir`, once every service is ready.
    pub async fn attach(data_dir: &Path) -> anyhow::Result<Self> {
        let dir = DataDir::existing(data_dir);
        let info = crate::up::running_apphost(&dir).with_context(|| {
            format!(
                "no apphost is running for {}: start one with `lab up`, or pass --up",
                dir.root().display()
            )
        })?;
        let urls = ClusterUrls {
            bff: info.bff_url.trim_end_matches('/').to_owned(),
            control: info.control_url.trim_end_matches('/').to_owned(),
        };
        wait_ready(&urls, Duration::from_secs(60)).await?;
        Ok(Self {
            urls,
            started: None,
            data_dir: data_dir.to_path_buf(),
        })
    }

    /// Starts `lab up --data-dir <data_dir> --listen 127.0.0.1:0 <up_args>` as a child (its output
    /// in `<data_dir>/soak-up.log`) and waits until every service is ready.
    pub async fn start(data_dir: &Path, up_args: &[String]) -> anyhow::Result<Self> {
        let dir = DataDir::open(data_dir)?;
        if let Some(info) = crate::up::running_apphost(&dir) {
            bail!(
                "an apphost is already running for {} (pid {}): drop --up to use it",
                dir.root().display(),
                info.pid
            );
        }
        dir.remove(ApphostInfo::FILE);
        let log_path = dir.root().join("soak-up.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = tokio::process::Command::new(crate::bench::own_exe()?);
        cmd.arg("up")
            .arg("--data-dir")
            .arg(dir.root())
            .args(["--listen", "127.0.0.1:0"])
            .args(up_args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting `lab up`")?;
        let deadline = Instant::now() + UP_WITHIN;
        let info = loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "`lab up` exited ({status}) before it was ready; its output is in {}",
                    log_path.display()
                );
            }
            if let Some(info) = crate::up::running_apphost(&dir) {
                break info;
            }
            if Instant::now() >= deadline {
                bail!(
                    "`lab up` wrote no apphost.json within {UP_WITHIN:?}; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let urls = ClusterUrls {
            bff: info.bff_url.trim_end_matches('/').to_owned(),
            control: info.control_url.trim_end_matches('/').to_owned(),
        };
        let cluster = Self {
            urls,
            started: Some(child),
            data_dir: dir.root().to_path_buf(),
        };
        let mut cluster = cluster;
        while let Some(child) = cluster.started.as_mut() {
            if let Some(status) = child.try_wait()? {
                cluster.stop().await;
                bail!(
                    "`lab up` exited ({status}) before every service was ready; its output is in {}",
                    log_path.display()
                );
            }
            let not_ready = match ready_now(&cluster.urls).await {
                Ok(()) => return Ok(cluster),
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                cluster.stop().await;
                bail!(
                    "the cluster was not ready within {UP_WITHIN:?}: {not_ready}; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Ok(cluster)
    }

    /// Stops the cluster if this process started it (`lab down`: the apphost, its services and
    /// the private infrastructure); leaves an attached one running.
    pub async fn stop(mut self) {
        let Some(mut child) = self.started.take() else {
            return;
        };
        let args = crate::DownArgs {
            data_dir: self.data_dir.clone(),
        };
        if let Err(e) = crate::down(args).await {
            tracing::warn!(error = %e, "lab down after the soak failed");
        }
        // `lab down` waited for the apphost; the child is reaped here (killed if it lingers).
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Polls the control API until every service process is ready and the BFF answers its health.
async fn wait_ready(urls: &ClusterUrls, within: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let not_ready = match ready_now(urls).await {
            Ok(()) => return Ok(()),
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            bail!("the cluster was not ready within {within:?}: {not_ready}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Whether every service process is ready and the BFF answers its health; if not, why.
async fn ready_now(urls: &ClusterUrls) -> Result<(), String> {
    let rows = crate::status::fetch(&urls.control)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let services = rows.iter().filter(|r| r.kind == "service").count();
    let waiting: Vec<&str> = rows
        .iter()
        .filter(|r| r.kind == "service" && r.health != Health::Ready)
        .map(|r| r.name.as_str())
        .collect();
    if services == 0 {
        return Err("no service listed yet".into());
    }
    if !waiting.is_empty() {
        return Err(format!("not ready: {}", waiting.join(", ")));
    }
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(format!("{}/api/health", urls.bff)).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("the BFF's health answered {}", r.status())),
        Err(e) => Err(format!("the BFF did not answer: {e}")),
    }
}

/// `GET <control>/chaos`: every edge and its targets, every active TCP fault.
pub async fn chaos_state(client: &reqwest::Client, control: &str) -> anyhow::Result<Value> {
    client
        .get(format!("{control}/chaos"))
        .send()
        .await
        .context("the control API did not answer GET /chaos")?
        .error_for_status()?
        .json()
        .await
        .context("unreadable GET /chaos")
}
