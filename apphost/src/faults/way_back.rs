//! The way back from a kill or a restart, by layer: a service instance through its supervisor
//! (which starts it again), a private infrastructure instance stopped and relaunched here; either
//! way the fault records how long until a new process answered.

use std::time::Duration;

use lab_faultproxy::FaultId;
use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::{Action, ProcessFaults};
use crate::proc;
use crate::supervisor::Control;
use crate::table::{Health, ProcessInfo};

/// A process is back when it answers again; past this the kill's record says it is not.
const RESTART_WATCH: Duration = Duration::from_secs(120);
/// How often the way back is checked: fine enough for a restart measured in hundreds of ms.
const RESTART_POLL: Duration = Duration::from_millis(25);

impl ProcessFaults {
    /// Kills or restarts `row`'s process and records how long until a new one answered.
    pub(super) async fn bring_back(self, id: FaultId, row: ProcessInfo, action: Action) {
        let t0 = Instant::now();
        let outcome = if row.kind == "service" {
            self.bring_back_service(&row, action).await
        } else {
            self.bring_back_infra(&row, action).await
        };
        let ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(active) = self.lock().get_mut(&id) {
            match outcome {
                Ok(()) => {
                    active.status = "restarted".into();
                    active.restart_ms = Some(ms);
                }
                Err(why) => {
                    active.status = "failed".into();
                    active.detail = Some(why);
                }
            }
        }
        tracing::info!(target = %row.name, ?action, ms, "process fault: back");
    }

    async fn bring_back_service(&self, row: &ProcessInfo, action: Action) -> Result<(), String> {
        let command = match action {
            Action::Kill => Control::Kill,
            _ => Control::Restart,
        };
        let tx = self
            .0
            .commands
            .get(&row.name)
            .ok_or_else(|| format!("{} has no supervisor", row.name))?;
        tx.send(command)
            .await
            .map_err(|_| format!("{} is being stopped", row.name))?;
        let deadline = Instant::now() + RESTART_WATCH;
        while Instant::now() < deadline {
            let now = self.0.table.snapshot();
            if now.iter().any(|r| {
                r.name == row.name
                    && r.pid.is_some()
                    && r.pid != row.pid
                    && r.health == Health::Ready
            }) {
                return Ok(());
            }
            tokio::time::sleep(RESTART_POLL).await;
        }
        Err(format!(
            "not ready again within {} s",
            RESTART_WATCH.as_secs()
        ))
    }

    async fn bring_back_infra(&self, row: &ProcessInfo, action: Action) -> Result<(), String> {
        let relaunch = self
            .0
            .relaunch
            .as_ref()
            .ok_or_else(|| format!("{} is not private", row.name))?;
        let Some(pid) = row.pid else {
            return Err(format!("{} has no pid", row.name));
        };
        match action {
            Action::Kill => {
                proc::stop_foreign(pid, Signal::SIGKILL, Duration::from_secs(1)).await;
            }
            _ => {
                crate::infra::stop(&relaunch.dir, &row.name).await;
            }
        }
        self.0.table.exited(&row.name, Health::Backoff, true);
        let instance = relaunch
            .start(&row.name, row.port)
            .await
            .map_err(|e| e.to_string())?;
        self.0.table.spawned(&row.name, Some(instance.pid));
        self.0.table.became_ready(&row.name);
        Ok(())
    }
}
