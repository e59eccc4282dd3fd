//! The process table: one row per process the apphost runs or uses (services and
//! infrastructure), written by the supervisor, read by the console and the control API.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Waiting for what it depends on.
    Waiting,
    /// Spawned, not yet answering `/readyz` with 200.
    Starting,
    /// `/readyz` answers 200.
    Ready,
    /// Answers, but `/readyz` says a critical dependency is down.
    NotReady,
    /// Does not answer.
    Down,
    /// Exited; waiting before the next start.
    Backoff,
    /// Stopped by the apphost.
    Stopped,
    /// Gave up: it never became ready.
    Failed,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::NotReady => "not_ready",
            Self::Down => "down",
            Self::Backoff => "backoff",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// One process as `GET /processes` and `lab status` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// `catalog-2`, `postgres`, …
    pub name: String,
    /// `service` or `infra`.
    pub kind: String,
    /// 1-based replica number.
    pub replica: u16,
    /// Current pid, when running.
    pub pid: Option<u32>,
    /// Its port.
    pub port: u16,
    /// Where to reach it.
    pub url: String,
    /// Its health as last observed.
    pub health: Health,
    /// How many times the apphost restarted it.
    pub restarts: u32,
    /// Seconds since its current process started.
    pub uptime_s: Option<f64>,
    /// Milliseconds from spawn to ready, for its latest start.
    pub ready_ms: Option<u64>,
    /// The last line it wrote before it last exited.
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct Row {
    /// What is shown, except the uptime, computed on read.
    info: ProcessInfo,
    /// When the current process started.
    started: Option<Instant>,
    /// The last line the process wrote; becomes `last_error` when it exits.
    last_line: String,
}

/// Shared table; the lock is never held across an await.
#[derive(Clone, Default)]
pub struct ProcessTable {
    rows: Arc<Mutex<Vec<Row>>>,
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Row>> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a row (its uptime starts now when it has a pid).
    pub fn add(&self, info: ProcessInfo) {
        // Infrastructure may have been started by an earlier apphost: its uptime is unknown here.
        let started = info
            .pid
            .filter(|_| info.kind == "service")
            .map(|_| Instant::now());
        self.lock().push(Row {
            info,
            started,
            last_line: String::new(),
        });
    }

    /// Changes the health of `name`.
    pub fn set_health(&self, name: &str, health: Health) {
        self.with(name, |row| row.info.health = health);
    }

    /// Records a new process of `name`.
    pub fn spawned(&self, name: &str, pid: Option<u32>) {
        self.with(name, |row| {
            row.info.pid = pid;
            row.info.health = Health::Starting;
            row.info.ready_ms = None;
            row.started = Some(Instant::now());
        });
    }

    /// Records that `name` answered `/readyz` for the first time since it started.
    pub fn became_ready(&self, name: &str) -> Option<u64> {
        let mut ms = None;
        self.with(name, |row| {
            row.info.health = Health::Ready;
            if row.info.ready_ms.is_none() {
                let t = row.started.map(|s| s.elapsed().as_millis() as u64);
                row.info.ready_ms = t;
                ms = t;
            }
        });
        ms
    }

    /// Records that `name`'s process exited; returns its restart count so far and last line.
    pub fn exited(&self, name: &str, health: Health, counted: bool) -> (u32, String) {
        let mut out = (0, String::new());
        self.with(name, |row| {
            row.info.pid = None;
            row.info.health = health;
            row.started = None;
            if counted {
                row.info.restarts += 1;
            }
            if !row.last_line.is_empty() {
                row.info.last_error = Some(row.last_line.clone());
            }
            out = (row.info.restarts, row.last_line.clone());
        });
        out
    }

    /// Remembers the latest line `name` wrote.
    pub fn last_line(&self, name: &str, line: &str) {
        self.with(name, |row| {
            row.last_line.clear();
            row.last_line.push_str(line);
        });
    }

    /// The current table.
    pub fn snapshot(&self) -> Vec<ProcessInfo> {
        self.lock()
            .iter()
            .map(|r| {
                let mut info = r.info.clone();
                info.uptime_s = r.started.map(|s| {
                    let secs = s.elapsed().as_secs_f64();
                    (secs * 10.0).round() / 10.0
                });
                info
            })
            .collect()
    }

    fn with(&self, name: &str, f: impl FnOnce(&mut Row)) {
        if let Some(row) = self.lock().iter_mut().find(|r| r.info.name == name) {
            f(row);
        }
    }
}
