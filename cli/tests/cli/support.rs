//! What the tests share: running `lab`, unique data directories and databases, waiting on the
//! control API, and finding every process an apphost started (by the marker variable).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const LAB: &str = env!("CARGO_BIN_EXE_lab");
pub const SHARED_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const SHARED_REDIS: &str = "redis://127.0.0.1:6379";
pub const SHARED_AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A data directory of its own, removed (with its test database) when dropped.
pub struct Sandbox {
    pub dir: PathBuf,
    pub database: String,
}

impl Sandbox {
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{name}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir()
            .join(format!("lab-cli-{id}"))
            .join(".lab");
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            database: format!("lab_cli_{id}"),
        }
    }

    /// `lab up` against the shared servers, without OpenBao, the BFF on a free port.
    pub fn up_shared(&self) -> tokio::process::Command {
        let mut cmd = self.lab(&["up"]);
        cmd.args(["--postgres-url", SHARED_PG, "--redis-url", SHARED_REDIS])
            .args(["--amqp-url", SHARED_AMQP, "--no-vault"])
            .args(["--database", &self.database]);
        cmd
    }

    /// Starts `cmd` (a long-running `lab up`) with its output in files of the sandbox, so a full
    /// pipe can never stall it; [`Sandbox::output`] reads them.
    pub fn spawn_logged(&self, mut cmd: tokio::process::Command) -> tokio::process::Child {
        let root = self.dir.parent().unwrap();
        cmd.stdout(std::fs::File::create(root.join("up.out")).unwrap())
            .stderr(std::fs::File::create(root.join("up.err")).unwrap());
        cmd.spawn().unwrap()
    }

    /// What the logged `lab up` printed so far (stdout, stderr).
    pub fn output(&self) -> (String, String) {
        let root = self.dir.parent().unwrap();
        let read = |n: &str| std::fs::read_to_string(root.join(n)).unwrap_or_default();
        (read("up.out"), read("up.err"))
    }

    /// The pid of the running apphost.
    pub fn apphost(&self) -> (u32, String) {
        let text = std::fs::read_to_string(self.dir.join("apphost.json")).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        (
            v["pid"].as_u64().unwrap() as u32,
            v["bff_url"].as_str().unwrap().to_owned(),
        )
    }

    /// `lab <args> --data-dir <dir>`, output captured, killed if the test drops it.
    pub fn lab(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(LAB);
        cmd.args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .env("LAB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if args.first() == Some(&"up") {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd
    }

    /// The control API's base URL, once the apphost has written it.
    pub async fn control_url(&self, within: Duration) -> String {
        let file = self.dir.join("apphost.json");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Ok(v) = serde_json::from_str::<Value>(&text)
            {
                return v["control_url"].as_str().unwrap().to_owned();
            }
            if Instant::now() >= deadline {
                let (out, err) = self.output();
                panic!("no apphost.json after {within:?}; lab up printed:\n{out}\n{err}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every process still carrying this sandbox's marker.
    pub fn leftovers(&self) -> Vec<u32> {
        processes_marked(&self.dir)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A failed test may leave an apphost or private servers running: stop them first.
        let _ = std::process::Command::new(LAB)
            .arg("down")
            .arg("--data-dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(root) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-qc"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.database
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Polls `/processes` until `ok` holds for the rows, or panics after `within`.
pub async fn wait_until(
    control: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(resp) = reqwest::get(format!("{control}/processes")).await
            && let Ok(rows) = resp.json::<Vec<Value>>().await
            && ok(&rows)
        {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The apphost's chaos state (`GET /chaos` of its control API: edges, targets, faults), or none
/// while it does not answer with JSON.
pub async fn chaos_state(control: &str) -> Option<Value> {
    reqwest::get(format!("{control}/chaos"))
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Every service process is up and ready: eight, or seven without OpenBao (no identity).
pub fn all_services_ready(rows: &[Value]) -> bool {
    let services: Vec<&Value> = rows.iter().filter(|r| r["kind"] == "service").collect();
    let with_identity = services.iter().any(|r| r["name"] == "identity");
    let expected = if with_identity { 8 } else { 7 };
    services.len() == expected && services.iter().all(|r| r["health"] == "ready")
}

pub fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter().find(|r| r["name"] == name).unwrap()
}

/// Pids of processes whose environment carries `LAB_APPHOST_DIR=<dir>`.
pub fn processes_marked(dir: &Path) -> Vec<u32> {
    let wanted = format!("{}={}", lab_apphost_marker(), dir.display());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
                && !zombie(*pid)
        })
        .collect()
}

fn zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'))
    })
}

fn lab_apphost_marker() -> &'static str {
    "LAB_APPHOST_DIR"
}

/// Waits for `child` to exit within `within`; returns its exit status and both outputs.
pub async fn finish(
    child: tokio::process::Child,
    within: Duration,
) -> (std::process::ExitStatus, String, String) {
    let out = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("did not exit within {within:?}"))
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls until no process carries the marker, or returns those left after `within`.
pub async fn wait_no_leftovers(sandbox: &Sandbox, within: Duration) -> Vec<u32> {
    let deadline = Instant::now() + within;
    loop {
        let left = sandbox.leftovers();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
