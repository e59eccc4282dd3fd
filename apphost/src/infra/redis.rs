//! The private Redis: `redis-server` on its own port, loopback only, no snapshots (Lab keeps
//! nothing in Redis that must survive a restart: caches, buckets, replays, revoked JTIs with TTLs).

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{InfraError, Instance, Launch, PidFile};
use crate::datadir::DataDir;

const WHAT: &str = "Redis";
const NAME: &str = "redis";

/// Finds `redis-server`, or says how to install it.
pub fn preflight() -> Result<PathBuf, InfraError> {
    super::find_binary("redis-server", &["/usr/bin/redis-server"]).ok_or_else(|| {
        InfraError::Missing {
            what: WHAT,
            detail: "no redis-server on PATH".into(),
            fix: "run `apt-get install redis-server`, or pass --redis-url of a running server"
                .into(),
        }
    })
}

/// Uses the running private Redis, or starts one on `port`.
pub async fn ensure(dir: &DataDir, bin: &PathBuf, port: u16) -> Result<Instance, InfraError> {
    if let Some(pf) = PidFile::running(dir, NAME) {
        return Ok(Instance {
            name: NAME,
            pid: pf.pid,
            port: pf.port,
            started_now: false,
            boot: None,
            init: None,
        });
    }
    let home = dir.subdir(NAME)?;
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(&home)
        .current_dir(&home);
    let spec = Launch {
        name: NAME,
        what: WHAT,
        cmd,
        port,
        stop_signal: Signal::SIGTERM,
        // Measured start: 0.04 s.
        timeout: Duration::from_secs(10),
    };
    super::launch(dir, spec, || ping(port)).await
}

/// `PING` → `+PONG` over a raw socket (no client needed for one command).
pub async fn ping(port: u16) -> Result<(), String> {
    let mut stream = super::tcp(port).await?;
    stream
        .write_all(b"PING\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf))
        .await
        .map_err(|_| "no PONG in time".to_owned())?
        .map_err(|e| e.to_string())?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&buf[..n]).trim().to_owned())
    }
}
