//! Process faults: pause (SIGSTOP, resumed at expiry, on removal and at shutdown), kill (SIGKILL,
//! then started again, with the time that took) and restart (graceful stop, then start), on a
//! service instance or on a private infrastructure instance `lab up` owns.
//!
//! Each is a fault like the TCP ones (`lab_faultproxy::Chaos`): an id from the same id space, a
//! target, a requester and an expiry, listed by `GET /chaos` and removable by
//! `DELETE /chaos/faults/{id}`. A kill or restart acts once; its fault stays listed until it
//! expires so the page can show what happened and how long the way back took. Visitors may not
//! pause or kill infrastructure (every service depends on it); the admin may. The state is plain
//! data behind a `std` mutex never held across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use lab_faultproxy::{FaultId, Requester, Scope};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod way_back;

use crate::cluster::Relaunch;
use crate::proc;
use crate::supervisor::Control;
use crate::table::ProcessTable;

/// What a process fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// SIGSTOP to its process group until the fault ends.
    Pause,
    /// SIGKILL; started again at once.
    Kill,
    /// Graceful stop (SIGTERM, wait), then started again.
    Restart,
}

impl Action {
    /// Whether a fault's `kind` names a process action.
    pub fn is_process_kind(kind: &str) -> bool {
        matches!(kind, "pause" | "kill" | "restart")
    }
}

/// Why a process fault was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProcessFaultError {
    #[error("no process is named {0:?}")]
    UnknownTarget(String),
    #[error(
        "a process fault names one process (`{{\"type\": \"target\", \"name\": …}}`), not an edge"
    )]
    EdgeScope,
    #[error("a fault must last between 1 s and {max:?}, not {ttl:?}")]
    Expiry { ttl: Duration, max: Duration },
    #[error(
        "visitors may not {0} infrastructure ({1}): every service depends on it; the admin role may"
    )]
    VisitorInfra(&'static str, String),
    #[error("{0} is an existing server `lab up` did not start; it only acts on its own instances")]
    NotOwned(String),
    #[error(
        "openbao is a dev server that forgets every lease and key when it restarts; pause it instead"
    )]
    OpenBao,
    #[error("{0} is not running now")]
    NotRunning(String),
    #[error("no active fault has id {0}")]
    UnknownFault(FaultId),
}

/// A process fault as `GET /chaos` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessFaultView {
    pub id: FaultId,
    /// The process, as a target scope.
    pub scope: Scope,
    /// What it does.
    pub fault: Action,
    pub requester: Requester,
    /// Time left before it is removed (and, for a pause, the process resumed).
    pub expires_in_ms: u64,
    /// What happened: `paused`, `restarting`, `restarted`, `failed`.
    pub status: String,
    /// For a kill or restart: milliseconds from the signal to the new process answering.
    pub restart_ms: Option<u64>,
    /// Anything worth reading: why a restart failed.
    pub detail: Option<String>,
}

/// One process with the state chaos shows next to its faults.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessState {
    pub name: String,
    /// `service` or `infra`.
    pub kind: String,
    pub pid: Option<u32>,
    /// `paused` while a pause holds it, else its health.
    pub state: String,
    pub restarts: u32,
    /// Whether `lab up` can act on it (private infrastructure or a service).
    pub owned: bool,
}

struct Active {
    target: String,
    action: Action,
    requester: Requester,
    expires_at: Instant,
    /// The paused process: pid and start time, so a reused pid is never resumed by mistake.
    paused: Option<(u32, Option<u64>)>,
    status: String,
    restart_ms: Option<u64>,
    detail: Option<String>,
}

/// The process-fault registry; cheap to clone.
#[derive(Clone)]
pub struct ProcessFaults(Arc<Shared>);

struct Shared {
    faults: Mutex<BTreeMap<FaultId, Active>>,
    table: ProcessTable,
    /// Each service process's command channel.
    commands: Arc<BTreeMap<String, mpsc::Sender<Control>>>,
    /// Starts private infrastructure again; `None` when none is private.
    relaunch: Option<Relaunch>,
    /// The TCP registry, for ids.
    ids: lab_faultproxy::Chaos,
    /// Wakes the expiry task when the earliest expiry may have moved.
    expiry_changed: Notify,
    /// Restart watchers and the expiry task.
    tracker: TaskTracker,
}

impl ProcessFaults {
    /// An empty registry whose expiry task runs on `tracker` until `shutdown` (which resumes
    /// every paused process on its way out).
    pub fn start(
        table: ProcessTable,
        commands: Arc<BTreeMap<String, mpsc::Sender<Control>>>,
        relaunch: Option<Relaunch>,
        ids: lab_faultproxy::Chaos,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let faults = ProcessFaults(Arc::new(Shared {
            faults: Mutex::new(BTreeMap::new()),
            table,
            commands,
            relaunch,
            ids,
            expiry_changed: Notify::new(),
            tracker: tracker.clone(),
        }));
        tracker.spawn(expire(faults.clone(), shutdown));
        faults
    }

    /// Applies `action` to the process `scope` names for `ttl`.
    pub fn apply(
        &self,
        scope: Scope,
        action: Action,
        ttl: Duration,
        requester: Requester,
    ) -> Result<ProcessFaultView, ProcessFaultError> {
        let Scope::Target(target) = scope else {
            return Err(ProcessFaultError::EdgeScope);
        };
        let max = requester.max_ttl();
        if ttl.is_zero() || ttl > max {
            return Err(ProcessFaultError::Expiry { ttl, max });
        }
        let row = self
            .0
            .table
            .snapshot()
            .into_iter()
            .find(|r| r.name == target)
            .ok_or_else(|| ProcessFaultError::UnknownTarget(target.clone()))?;
        let infra = row.kind == "infra";
        if infra {
            if requester == Requester::Visitor && action != Action::Restart {
                let verb = if action == Action::Pause {
                    "pause"
                } else {
                    "kill"
                };
                return Err(ProcessFaultError::VisitorInfra(verb, target));
            }
            if row.pid.is_none() || self.0.relaunch.is_none() {
                return Err(ProcessFaultError::NotOwned(target));
            }
            if target == "openbao" && action != Action::Pause {
                return Err(ProcessFaultError::OpenBao);
            }
        }
        let now = Instant::now();
        if action == Action::Pause {
            let mut faults = self.lock();
            if let Some((&id, active)) = faults
                .iter_mut()
                .find(|(_, a)| a.target == target && a.action == Action::Pause)
            {
                active.expires_at = active.expires_at.max(now + ttl);
                active.requester = requester;
                let view = view(id, active, now);
                drop(faults);
                self.0.expiry_changed.notify_one();
                return Ok(view);
            }
            drop(faults);
        }
        let pid = row
            .pid
            .filter(|&p| proc::alive(p))
            .ok_or_else(|| ProcessFaultError::NotRunning(target.clone()))?;
        let id = self.0.ids.reserve_id();
        let mut active = Active {
            target: target.clone(),
            action,
            requester,
            expires_at: now + ttl,
            paused: None,
            status: String::new(),
            restart_ms: None,
            detail: None,
        };
        match action {
            Action::Pause => {
                let started = proc::start_time(pid);
                proc::signal_group(pid, Signal::SIGSTOP);
                active.paused = Some((pid, started));
                active.status = "paused".into();
            }
            Action::Kill | Action::Restart => {
                active.status = "restarting".into();
                self.0
                    .tracker
                    .spawn(self.clone().bring_back(id, row, action));
            }
        }
        let view = view(id, &active, now);
        self.lock().insert(id, active);
        self.0.expiry_changed.notify_one();
        Ok(view)
    }

    /// Removes a fault now (a pause resumes its process).
    pub fn remove(&self, id: FaultId) -> Result<(), ProcessFaultError> {
        let removed = self.lock().remove(&id);
        let active = removed.ok_or(ProcessFaultError::UnknownFault(id))?;
        resume(&active);
        Ok(())
    }

    /// Whether `id` is a process fault.
    pub fn contains(&self, id: FaultId) -> bool {
        self.lock().contains_key(&id)
    }

    /// Resumes every paused process and forgets every fault: the apphost is stopping, and no
    /// process may be left stopped (a SIGTERM would wait behind the SIGSTOP).
    pub fn resume_all(&self) {
        let all = std::mem::take(&mut *self.lock());
        for active in all.values() {
            resume(active);
        }
    }

    /// The active process faults, with time left.
    pub fn faults(&self) -> Vec<ProcessFaultView> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|(&id, active)| view(id, active, now))
            .collect()
    }

    /// Every process with its state (paused ones say so).
    pub fn processes(&self) -> Vec<ProcessState> {
        let paused: Vec<String> = self
            .lock()
            .values()
            .filter(|a| a.paused.is_some())
            .map(|a| a.target.clone())
            .collect();
        self.0
            .table
            .snapshot()
            .into_iter()
            .map(|r| {
                let owned = r.kind == "service" || (r.pid.is_some() && self.0.relaunch.is_some());
                ProcessState {
                    state: if paused.contains(&r.name) {
                        "paused".into()
                    } else {
                        r.health.as_str().into()
                    },
                    name: r.name,
                    kind: r.kind,
                    pid: r.pid,
                    restarts: r.restarts,
                    owned,
                }
            })
            .collect()
    }

    /// Removes expired faults (resuming paused processes); returns the next expiry.
    fn expire_now(&self) -> Option<Instant> {
        let now = Instant::now();
        let mut faults = self.lock();
        let expired: Vec<FaultId> = faults
            .iter()
            .filter(|(_, a)| a.expires_at <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(active) = faults.remove(&id) {
                resume(&active);
            }
        }
        faults.values().map(|a| a.expires_at).min()
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<FaultId, Active>> {
        // Each change is whole: the map stays consistent across a panic.
        self.0.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// SIGCONT to a paused process, if it is still the one that was paused.
fn resume(active: &Active) {
    if let Some((pid, started)) = active.paused
        && proc::same_process(pid, started)
    {
        proc::signal_group(pid, Signal::SIGCONT);
    }
}

fn view(id: FaultId, active: &Active, now: Instant) -> ProcessFaultView {
    let left = active.expires_at.saturating_duration_since(now);
    ProcessFaultView {
        id,
        scope: Scope::Target(active.target.clone()),
        fault: active.action,
        requester: active.requester,
        expires_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        status: active.status.clone(),
        restart_ms: active.restart_ms,
        detail: active.detail.clone(),
    }
}

/// Removes faults as they expire until `shutdown`, then resumes whatever is still paused.
async fn expire(faults: ProcessFaults, shutdown: CancellationToken) {
    loop {
        let next = faults.expire_now();
        let until_next = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {
                faults.resume_all();
                return;
            }
            () = faults.0.expiry_changed.notified() => {}
            () = until_next => {}
        }
    }
}
