//! The private PostgreSQL: `initdb` once with scram-sha-256 password authentication (so leased
//! credentials are really checked), then `postgres` on its own port with TCP on loopback only.
//! As root it runs as the `postgres` system user, which PostgreSQL insists on.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lab_db::sqlx::{Connection, PgConnection};
use nix::sys::signal::Signal;
use tokio::process::Command;

use super::{InfraError, Instance, Launch, PidFile};
use crate::datadir::DataDir;

const WHAT: &str = "PostgreSQL";
const NAME: &str = "postgres";

/// Where Debian puts the server binaries, newest first (they are not on PATH).
const BIN_DIRS: [&str; 3] = [
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

/// The installed server binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// Directory holding `initdb` and `postgres`.
    pub bin_dir: PathBuf,
}

/// Finds `initdb` and `postgres`, or says how to install them.
pub fn preflight() -> Result<Binaries, InfraError> {
    let from_path = crate::proc::which("initdb").and_then(|p| p.parent().map(Path::to_path_buf));
    from_path
        .into_iter()
        .chain(BIN_DIRS.iter().map(PathBuf::from))
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .map(|bin_dir| Binaries { bin_dir })
        .ok_or_else(|| InfraError::Missing {
            what: WHAT,
            detail: "no initdb/postgres in /usr/lib/postgresql/*/bin or on PATH".into(),
            fix: "run `apt-get install postgresql`, or pass --postgres-url of a running server"
                .into(),
        })
}

/// The superuser URL of the private server.
pub fn admin_url(port: u16, password: &str) -> String {
    format!("postgres://postgres:{password}@127.0.0.1:{port}/postgres")
}

/// Uses the running private server, or initialises (first time) and starts one on `port`.
pub async fn ensure(
    dir: &DataDir,
    bins: &Binaries,
    port: u16,
    password: &str,
) -> Result<Instance, InfraError> {
    let url = admin_url(port, password);
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
    let owner = run_as()?;
    let home = dir.subdir(NAME)?;
    let data = home.join("data");
    chown(&home, owner)?;
    let mut init = None;
    if !data.join("PG_VERSION").is_file() {
        let t = std::time::Instant::now();
        initdb(bins, &home, &data, owner, password).await?;
        init = Some(t.elapsed());
    }
    let mut cmd = Command::new(bins.bin_dir.join("postgres"));
    cmd.arg("-D")
        .arg(&data)
        .arg("-p")
        .arg(port.to_string())
        .args(["-c", "listen_addresses=127.0.0.1"])
        // No Unix socket: TCP on loopback is all Lab uses, and socket paths have length limits.
        .args(["-c", "unix_socket_directories="])
        // Eight service processes with pools of up to ten, OpenBao and the admin connection.
        .args(["-c", "max_connections=200"])
        .current_dir(&home);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    let spec = Launch {
        name: NAME,
        what: WHAT,
        cmd,
        port,
        // SIGINT is PostgreSQL's "fast" shutdown; SIGTERM would wait for every client to leave.
        stop_signal: Signal::SIGINT,
        // Measured start: 0.13 s; a cold page cache or crash recovery takes longer.
        timeout: Duration::from_secs(30),
    };
    let mut instance = super::launch(dir, spec, || probe(&url)).await?;
    instance.init = init;
    Ok(instance)
}

/// One real login with the superuser password.
pub async fn probe(url: &str) -> Result<(), String> {
    match tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(e)) => Err(lab_db::short_reason(&e)),
        Err(_) => Err("no answer in 2 s".into()),
    }
}

/// As root, PostgreSQL must run as an unprivileged user: the `postgres` system user.
fn run_as() -> Result<Option<(u32, u32)>, InfraError> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    match nix::unistd::User::from_name("postgres") {
        Ok(Some(u)) => Ok(Some((u.uid.as_raw(), u.gid.as_raw()))),
        _ => Err(InfraError::Missing {
            what: WHAT,
            detail: "no `postgres` system user to run the server as".into(),
            fix: "run `apt-get install postgresql`, or pass --postgres-url of a running server"
                .into(),
        }),
    }
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), InfraError> {
    let setup = |reason: String| InfraError::Setup {
        what: WHAT,
        reason: format!("cannot prepare {}: {reason}", path.display()),
    };
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| setup(e.to_string()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| setup(e.to_string()))
}

/// Creates the cluster: superuser `postgres` with `password`, scram-sha-256 for every login.
async fn initdb(
    bins: &Binaries,
    home: &Path,
    data: &Path,
    owner: Option<(u32, u32)>,
    password: &str,
) -> Result<(), InfraError> {
    let log = home.join("initdb.log");
    let failed = |reason: String| InfraError::Failed {
        what: WHAT,
        reason: format!("initdb failed: {reason}"),
        log: log.clone(),
    };
    // A half-made cluster from an interrupted run would make initdb refuse; start over.
    let _ = std::fs::remove_dir_all(data);
    let pwfile = home.join("pwfile");
    std::fs::write(&pwfile, password).map_err(|e| failed(e.to_string()))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = std::fs::File::create(&log).map_err(|e| failed(e.to_string()))?;
    let err = out.try_clone().map_err(|e| failed(e.to_string()))?;
    let mut cmd = Command::new(bins.bin_dir.join("initdb"));
    cmd.arg("-D")
        .arg(data)
        .args(["-U", "postgres", "--auth=scram-sha-256", "-E", "UTF8"])
        .args(["--locale=C", "--no-sync"])
        .arg(format!("--pwfile={}", pwfile.display()))
        .current_dir(home)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    let status = cmd.status().await;
    let _ = std::fs::remove_file(&pwfile);
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(failed(format!(
            "{s}: {} (the postgres user must be able to reach {})",
            crate::proc::last_log_line(&log),
            home.display()
        ))),
        Err(e) => Err(failed(e.to_string())),
    }
}
