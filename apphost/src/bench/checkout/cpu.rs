//! CPU per completed order, robust to a busy machine: utime + stime of the processes that do the
//! work (the bench's service children, the PostgreSQL backends serving the bench database, and
//! RabbitMQ's `beam.smp`), sampled over the saturation rounds, and PostgreSQL's committed
//! transactions in the bench database (`pg_stat_database.xact_commit`) over the same window.
//! Rates move with whatever else runs; the work done per order does not.

use std::collections::HashMap;

use anyhow::Context;
use sqlx::PgConnection;

use super::DATABASE;
use crate::proc;

/// `application_name` of the bench's own completion poller: its backend is the bench's load, not
/// the cluster's, so it is left out of the PostgreSQL group.
pub const WATCHER_APP: &str = "lab-bench-watcher";

/// Linux reports `/proc/<pid>/stat` times in USER_HZ, fixed at 100 per second on every
/// architecture the kernel exports to user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// Who does the work of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// catalog, orders, checkout, payments and the PSP.
    Services,
    /// Backends connected to the bench database.
    Postgres,
    /// The broker (shared with anyone else using it).
    Rabbit,
}

/// utime + stime of `pid` in ticks, from `/proc/<pid>/stat` (fields 14 and 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    ticks_of(&proc::read_stat(pid)?)
}

/// utime + stime from the text of a `/proc/<pid>/stat`.
fn ticks_of(stat: &str) -> Option<u64> {
    let mut rest = proc::stat_fields(stat)?.skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Pids of every process whose command name is `name`.
fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .collect()
}

/// CPU time and transactions between the first and the latest [`Sampler::sample`].
pub struct Sampler {
    services: Vec<u32>,
    /// Per pid: its group, its ticks when first seen, its ticks when last seen. A backend that
    /// appears mid-window counts from then; one that exits keeps what it had.
    seen: HashMap<u32, (Group, u64, u64)>,
    /// `xact_commit` of the bench database at the first and the latest sample.
    commits: Option<(i64, i64)>,
}

impl Sampler {
    pub fn new(services: Vec<u32>) -> Self {
        Self {
            services,
            seen: HashMap::new(),
            commits: None,
        }
    }

    /// Reads every process of the three groups, and the bench database's commits, through
    /// `admin` (a connection to another database, so it is not counted itself).
    pub async fn sample(&mut self, admin: &mut PgConnection) -> anyhow::Result<()> {
        let backends: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = $1 AND application_name <> $2 AND backend_type = 'client backend'",
        )
        .bind(DATABASE)
        .bind(WATCHER_APP)
        .fetch_all(&mut *admin)
        .await
        .context("listing the bench database's backends")?;
        let commits: i64 =
            sqlx::query_scalar("SELECT xact_commit FROM pg_stat_database WHERE datname = $1")
                .bind(DATABASE)
                .fetch_one(&mut *admin)
                .await
                .context("reading the bench database's commits")?;
        let pids = self
            .services
            .iter()
            .map(|&p| (p, Group::Services))
            .chain(
                backends
                    .into_iter()
                    .filter_map(|p| u32::try_from(p).ok())
                    .map(|p| (p, Group::Postgres)),
            )
            .chain(
                pids_named("beam.smp")
                    .into_iter()
                    .map(|p| (p, Group::Rabbit)),
            );
        for (pid, group) in pids {
            if let Some(ticks) = cpu_ticks(pid) {
                self.seen
                    .entry(pid)
                    .and_modify(|e| e.2 = ticks)
                    .or_insert((group, ticks, ticks));
            }
        }
        self.commits = Some(
            self.commits
                .map_or((commits, commits), |(a, _)| (a, commits)),
        );
        Ok(())
    }

    /// CPU seconds of `group` over the window.
    pub fn seconds(&self, group: Group) -> f64 {
        let ticks: u64 = self
            .seen
            .values()
            .filter(|e| e.0 == group)
            .map(|e| e.2.saturating_sub(e.1))
            .sum();
        ticks as f64 / TICKS_PER_SECOND
    }

    /// Transactions committed in the bench database over the window.
    pub fn commits(&self) -> i64 {
        self.commits.map_or(0, |(a, b)| b - a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_and_system_time_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (beam (smp) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 \
                    30 0 999 1000000 500 18446744073709551615";
        assert_eq!(ticks_of(stat), Some(1234 + 567));
        assert_eq!(ticks_of("4242 (truncated) S 1 2"), None);
    }

    #[test]
    fn a_process_that_does_not_exist_has_no_time() {
        assert_eq!(cpu_ticks(u32::MAX), None);
    }
}
