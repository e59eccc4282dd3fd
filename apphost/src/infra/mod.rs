//! The infrastructure `lab up` needs: PostgreSQL, Redis, RabbitMQ and OpenBao, either private
//! instances under the data directory or existing servers given by address.
//!
//! Private instances are started in parallel, in their own process groups, and kept running when
//! the apphost exits (like Aspire's persistent containers), so the next `lab up` only starts the
//! services; their pids are in `<data dir>/<name>/lab.pid` for `lab down`. If any of them fails,
//! the ones this run started are stopped again, so a failed start leaves nothing behind.

pub mod openbao;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::datadir::{DataDir, DataDirError};
use crate::proc;

/// Why a piece of infrastructure is not available; each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum InfraError {
    #[error("{what} is not installed ({detail}): {fix}")]
    Missing {
        what: &'static str,
        detail: String,
        fix: String,
    },
    #[error("{what} did not start: {reason} (log: {log})")]
    Failed {
        what: &'static str,
        reason: String,
        log: PathBuf,
    },
    #[error("{what}: {reason}")]
    Setup { what: &'static str, reason: String },
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

/// A private server started (now or by an earlier apphost) under the data directory.
#[derive(Debug)]
pub struct Instance {
    /// `postgres`, `redis`, `rabbitmq`, `openbao`.
    pub name: &'static str,
    /// Its process (and process group) id.
    pub pid: u32,
    /// Its main port.
    pub port: u16,
    /// Whether this run started it (and so must stop it again if the start as a whole fails).
    pub started_now: bool,
    /// Time from spawn to answering, when this run started it.
    pub boot: Option<Duration>,
    /// Time spent preparing its data first (PostgreSQL's `initdb` on a first run).
    pub init: Option<Duration>,
}

/// What `lab.pid` records about a running private instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PidFile {
    /// Process (and group) id.
    pub pid: u32,
    /// Main port.
    pub port: u16,
    /// How to stop it gracefully: `TERM` or `INT` (PostgreSQL's fast shutdown).
    pub stop_signal: String,
    /// Its start time (see [`proc::start_time`]), so a reused pid is not taken for it.
    #[serde(default)]
    pub started: Option<u64>,
}

impl PidFile {
    fn path(dir: &DataDir, name: &str) -> PathBuf {
        dir.root().join(name).join("lab.pid")
    }

    /// The recorded instance of `name`, if its process is still alive.
    pub fn running(dir: &DataDir, name: &str) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(dir, name)).ok()?;
        let pf: Self = serde_json::from_str(&text).ok()?;
        proc::same_process(pf.pid, pf.started).then_some(pf)
    }

    fn save(&self, dir: &DataDir, name: &str) -> Result<(), DataDirError> {
        dir.write_json(&format!("{name}/lab.pid"), self, 0o644)
    }

    fn signal(&self) -> Signal {
        if self.stop_signal == "INT" {
            Signal::SIGINT
        } else {
            Signal::SIGTERM
        }
    }
}

/// How to start one private server.
pub(crate) struct Launch {
    /// Short name: its directory under the data directory, its row in `lab status`.
    pub name: &'static str,
    /// What the operator calls it, for messages.
    pub what: &'static str,
    /// The server's command line and environment.
    pub cmd: tokio::process::Command,
    /// Its main port.
    pub port: u16,
    /// The signal that stops it gracefully.
    pub stop_signal: Signal,
    /// How long it may take to answer.
    pub timeout: Duration,
}

/// Spawns a private server's process detached from the apphost's lifetime (own process group,
/// output to `server.log`), records its pid, then waits until `ready` says it answers. On failure
/// the process is stopped again and the error names the log.
pub(crate) async fn launch<F, Fut>(
    dir: &DataDir,
    spec: Launch,
    ready: F,
) -> Result<Instance, InfraError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let Launch {
        name,
        what,
        mut cmd,
        port,
        stop_signal,
        timeout,
    } = spec;
    let log = dir.subdir(name)?.join("server.log");
    let out = std::fs::File::create(&log).map_err(|e| InfraError::Failed {
        what,
        reason: e.to_string(),
        log: log.clone(),
    })?;
    let err = out.try_clone().map_err(|e| InfraError::Failed {
        what,
        reason: e.to_string(),
        log: log.clone(),
    })?;
    proc::own_group(&mut cmd, dir.root());
    cmd.stdout(out).stderr(err);
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| InfraError::Failed {
        what,
        reason: e.to_string(),
        log: log.clone(),
    })?;
    let Some(pid) = child.id() else {
        return Err(InfraError::Failed {
            what,
            reason: "exited at once".into(),
            log,
        });
    };
    let pid_file = PidFile {
        pid,
        port,
        stop_signal: if stop_signal == Signal::SIGINT {
            "INT"
        } else {
            "TERM"
        }
        .into(),
        started: proc::start_time(pid),
    };
    let outcome = async {
        pid_file.save(dir, name)?;
        let deadline = started + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(InfraError::Failed {
                    what,
                    reason: format!("exited ({status}): {}", proc::last_log_line(&log)),
                    log: log.clone(),
                });
            }
            match ready().await {
                Ok(()) => return Ok(()),
                Err(reason) if Instant::now() >= deadline => {
                    return Err(InfraError::Failed {
                        what,
                        reason: format!("not answering after {} s ({reason})", timeout.as_secs()),
                        log: log.clone(),
                    });
                }
                // Servers here come up in 0.05–20 s; polling every 50 ms costs nothing.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    .await;
    match outcome {
        Ok(()) => Ok(Instance {
            name,
            pid,
            port,
            started_now: true,
            boot: Some(started.elapsed()),
            init: None,
        }),
        Err(e) => {
            proc::stop_child(&mut child, stop_signal, Duration::from_secs(5)).await;
            dir.remove(&format!("{name}/lab.pid"));
            Err(e)
        }
    }
}

/// Stops the private instance `name` recorded in the data directory, if it runs.
pub async fn stop(dir: &DataDir, name: &str) -> bool {
    let Some(pf) = PidFile::running(dir, name) else {
        dir.remove(&format!("{name}/lab.pid"));
        return false;
    };
    // PostgreSQL's fast shutdown and RabbitMQ's orderly stop take a few seconds at most.
    let stopped = proc::stop_foreign(pf.pid, pf.signal(), Duration::from_secs(15)).await;
    dir.remove(&format!("{name}/lab.pid"));
    stopped
}

/// Stops an instance this run started (after a failed start), leaving its data.
pub async fn undo(dir: &DataDir, instance: &Instance) {
    if instance.started_now {
        stop(dir, instance.name).await;
    }
}

/// Finds an installed binary: an explicit path, or `name` on PATH, or one of `fallbacks`.
pub fn find_binary(name: &str, fallbacks: &[&str]) -> Option<PathBuf> {
    proc::which(name).or_else(|| {
        fallbacks
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .map(Path::to_path_buf)
    })
}

/// Opens a TCP connection to loopback `port` within a short bound.
pub(crate) async fn tcp(port: u16) -> Result<tokio::net::TcpStream, String> {
    // Loopback connects are instant; anything slower means nothing is listening yet.
    tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(crate::ports::loopback(port)),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())
}
