//! Process plumbing shared by infrastructure and services: starting a process in its own process
//! group (so a terminal's Ctrl-C reaches only the apphost, which then stops everything in order),
//! marking it as ours, and stopping a whole group with a grace period.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::process::Command;

/// Set on every process the apphost starts, with the data directory as value: tests (and a
/// curious operator) find every process of one apphost with it in `/proc/<pid>/environ`.
pub const MARKER_ENV: &str = "LAB_APPHOST_DIR";

/// Set on services to the apphost's pid: `lab run` asks the kernel to SIGTERM it when that
/// process dies (PR_SET_PDEATHSIG), so even a SIGKILLed apphost leaves no service behind.
pub const PARENT_ENV: &str = "LAB_APPHOST_PID";

/// Prepares `cmd` to run in a new process group with the apphost's marker.
pub fn own_group(cmd: &mut Command, data_dir: &Path) {
    cmd.process_group(0)
        .env(MARKER_ENV, data_dir)
        .stdin(std::process::Stdio::null());
}

/// Whether a process with `pid` exists and has not exited (a zombie, exited but not yet reaped
/// by whoever inherited it, counts as gone).
pub fn alive(pid: u32) -> bool {
    to_pid(pid).is_some_and(|p| kill(p, None).is_ok()) && !zombie(pid)
}

fn zombie(pid: u32) -> bool {
    read_stat(pid)
        .and_then(|stat| stat_fields(&stat)?.next().map(|state| state == "Z"))
        .unwrap_or(false)
}

/// The text of `/proc/<pid>/stat`, if the process exists.
pub fn read_stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The fields of a `/proc/<pid>/stat` text from the third (the state) on. The command name
/// (field 2) may contain spaces and parentheses; the fields after its last `)` are plain.
pub fn stat_fields(stat: &str) -> Option<std::str::SplitWhitespace<'_>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace())
}

/// Sends `signal` to the process group `pgid`; a group that is already gone is not an error.
pub fn signal_group(pgid: u32, signal: Signal) {
    if let Some(p) = to_pid(pgid) {
        let _ = killpg(p, signal);
    }
}

/// Stops a process that is not our child (started by an earlier apphost): `first` to its group,
/// then SIGKILL to the group once `grace` has passed. Returns whether it was running.
pub async fn stop_foreign(pid: u32, first: Signal, grace: Duration) -> bool {
    if !alive(pid) {
        return false;
    }
    signal_group(pid, first);
    // A process paused by chaos would hold the signal until resumed: let it act on it now.
    signal_group(pid, Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal_group(pid, Signal::SIGKILL);
    // SIGKILL is not deferrable; a brief wait lets the kernel tear the process down.
    for _ in 0..40 {
        if !alive(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    true
}

/// Stops our own child's process group: `first`, wait up to `grace` for the child, then SIGKILL
/// the group (which also takes any grandchild that outlived it).
pub async fn stop_child(child: &mut tokio::process::Child, first: Signal, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    signal_group(pid, first);
    // A process paused by chaos would hold the signal until resumed: let it act on it now.
    signal_group(pid, Signal::SIGCONT);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    signal_group(pid, Signal::SIGKILL);
}

/// When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat`, field 22). With
/// the pid it identifies a process for good: a pid recorded before a reboot and since reused by
/// an unrelated process has another start time, so it is never signalled. (The marker variable
/// cannot serve here: Redis overwrites its environment with its process title.)
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(&read_stat(pid)?)?.nth(19)?.parse().ok()
}

/// Whether `pid` is alive and still the process that started at `started` (when known).
pub fn same_process(pid: u32, started: Option<u64>) -> bool {
    alive(pid) && (started.is_none() || start_time(pid) == started)
}

fn to_pid(pid: u32) -> Option<Pid> {
    i32::try_from(pid)
        .ok()
        .filter(|p| *p > 0)
        .map(Pid::from_raw)
}

/// The last non-empty line of a log file: what a server said before it died.
pub fn last_log_line(path: &Path) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_owned())
        })
        .unwrap_or_else(|| "no output".into())
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
