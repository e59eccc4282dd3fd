//! `lab down`: stops the running apphost (which stops its services), then the private
//! infrastructure recorded in the data directory. OpenBao goes first, after revoking every
//! leased database login, so no leased PostgreSQL user outlives it. Data is kept.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::datadir::{ApphostInfo, DataDir, Secrets};
use crate::infra::{self, PidFile, openbao};
use crate::{proc, up};

/// Arguments of `lab down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// The data directory whose processes to stop.
    #[arg(long, default_value = ".lab", env = "LAB_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// The apphost stops its services within their grace; past this, SIGKILL (its services then die
/// with it through PR_SET_PDEATHSIG).
const APPHOST_GRACE: Duration = Duration::from_secs(20);

/// Stops everything started from `args.data_dir`.
pub async fn down(args: DownArgs) -> anyhow::Result<()> {
    let dir = DataDir::existing(&args.data_dir);
    if !dir.root().is_dir() {
        println!("nothing to stop: {} does not exist", dir.root().display());
        return Ok(());
    }
    if let Some(info) = up::running_apphost(&dir) {
        println!("stopping the apphost (pid {})", info.pid);
        stop_apphost(info.pid).await;
    }
    dir.remove(ApphostInfo::FILE);

    if let Some(pf) = PidFile::running(&dir, "openbao")
        && let Ok(Some(secrets)) = dir.read_json::<Secrets>(Secrets::FILE)
        && let Ok(vault) = openbao::client(pf.port, &secrets.vault_root_token)
    {
        openbao::revoke_all(&vault).await;
    }
    let mut stopped = Vec::new();
    if infra::stop(&dir, "openbao").await {
        stopped.push("openbao");
    }
    let names = ["rabbitmq", "redis", "postgres"];
    let results = futures::future::join_all(names.iter().map(|n| infra::stop(&dir, n))).await;
    stopped.extend(
        names
            .iter()
            .zip(results)
            .filter(|(_, s)| *s)
            .map(|(n, _)| *n),
    );
    if stopped.is_empty() {
        println!("no infrastructure was running for {}", dir.root().display());
    } else {
        println!(
            "stopped {} (data kept in {})",
            stopped.join(", "),
            dir.root().display()
        );
    }
    Ok(())
}

async fn stop_apphost(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    // Not a group signal: the apphost stops its own children in order.
    let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
    let deadline = Instant::now() + APPHOST_GRACE;
    while proc::alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if proc::alive(pid) {
        let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
    }
}
