//! The private RabbitMQ: its own node name, AMQP and distribution ports, data and logs under the
//! data directory, and its own (empty) config, plugin and env files so the machine's broker
//! settings (`/etc/rabbitmq`) do not leak in. First boot takes 15–20 s (Erlang start-up), which
//! is why the apphost keeps it running between runs.

use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::{InfraError, Instance, Launch, PidFile};
use crate::datadir::DataDir;

const WHAT: &str = "RabbitMQ";
const NAME: &str = "rabbitmq";

/// Finds the broker's start script (the one in /usr/lib runs as the caller; /usr/sbin's wrapper
/// would switch to the `rabbitmq` user and write to /var/log).
pub fn preflight() -> Result<PathBuf, InfraError> {
    let lib = PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server");
    if lib.is_file() {
        return Ok(lib);
    }
    super::find_binary("rabbitmq-server", &[]).ok_or_else(|| InfraError::Missing {
        what: WHAT,
        detail: "no rabbitmq-server on PATH".into(),
        fix: "run `apt-get install rabbitmq-server`, or pass --amqp-url of a running broker".into(),
    })
}

/// The guest URL of the private broker (guest may log in from loopback only, which is all we use).
pub fn url(port: u16) -> String {
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// Uses the running private broker, or starts one on `port` (distribution on `dist_port`).
pub async fn ensure(
    dir: &DataDir,
    bin: &PathBuf,
    port: u16,
    dist_port: u16,
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
    let setup = |e: std::io::Error| InfraError::Setup {
        what: WHAT,
        reason: format!("cannot write its config in {}: {e}", home.display()),
    };
    let conf = home.join("rabbitmq.conf");
    std::fs::write(
        &conf,
        format!("listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users.guest = true\n"),
    )
    .map_err(setup)?;
    // No plugins: the management plugin would take port 15672, shared by every broker.
    let plugins = home.join("enabled_plugins");
    std::fs::write(&plugins, "[].\n").map_err(setup)?;
    let env_file = home.join("rabbitmq-env.conf");
    std::fs::write(&env_file, "").map_err(setup)?;
    let mut cmd = Command::new(bin);
    cmd.env("RABBITMQ_NODENAME", format!("lab-{port}@localhost"))
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist_port.to_string())
        .env("RABBITMQ_MNESIA_BASE", home.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", home.join("log"))
        .env("RABBITMQ_CONFIG_FILE", &conf)
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", &plugins)
        .env("RABBITMQ_CONF_ENV_FILE", &env_file)
        .env("RABBITMQ_PID_FILE", home.join("rabbitmq.pid"))
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env(
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
            "-kernel inet_dist_use_interface {127,0,0,1}",
        )
        .current_dir(&home);
    let spec = Launch {
        name: NAME,
        what: WHAT,
        cmd,
        port,
        stop_signal: Signal::SIGTERM,
        // Measured: 15–20 s on first boot, ~10 s on a restart; 2 cores under load take longer.
        timeout: Duration::from_secs(90),
    };
    super::launch(dir, spec, || handshake(port)).await
}

/// Sends the AMQP 0-9-1 protocol header and expects a frame back (Connection.Start): the broker
/// has booted, not just opened its socket.
pub async fn handshake(port: u16) -> Result<(), String> {
    let mut stream = super::tcp(port).await?;
    stream
        .write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
        .await
        .map_err(|_| "no AMQP answer in time".to_owned())?
        .map_err(|e| e.to_string())?;
    // Frame type 1 = method frame.
    if n > 0 && buf[0] == 1 {
        Ok(())
    } else {
        Err("not an AMQP broker yet".into())
    }
}
