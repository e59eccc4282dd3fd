//! Supervision of the service processes: each runs `lab run <service>` of this very binary in its
//! own process group, starts once what it depends on is ready, is probed on `/readyz`, is
//! restarted with exponential backoff when it exits, and is stopped with SIGTERM then SIGKILL.
//!
//! Each process has a command channel ([`Control`]) besides its stop token: that is where the
//! control API (and later chaos: pause, kill, restart) acts on one process.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::console::Console;
use crate::plan::ProcSpec;
use crate::proc;
use crate::table::{Health, ProcessTable};

/// First wait before restarting a crashed process: short, so a killed process is back within a
/// second; doubled on each crash in a row up to [`BACKOFF_MAX`].
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// A crash loop then costs one start every 10 s.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A process that ran this long before exiting was healthy; its backoff starts over.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// A process that exits this many times before it was ever ready will not start by retrying
/// (a taken port, a wrong URL): `lab up` gives up with its error instead of looping.
const STARTUP_ATTEMPTS: u32 = 3;
/// Services drain within 5 s (`HttpSettings::shutdown_grace_ms`); a little more before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(7);
/// `/readyz` polling: fast while starting (start-up time is what `lab up` waits on), slow after.
const POLL_STARTING: Duration = Duration::from_millis(50);
const POLL_RUNNING: Duration = Duration::from_secs(1);

/// What the control plane can ask of one process.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// Stop it gracefully and start it again at once.
    Restart,
    /// SIGKILL it; it is restarted like any crash.
    Kill,
}

/// What every supervised process shares.
pub struct Ctx {
    /// This binary, run as `lab run <service>`.
    pub exe: PathBuf,
    /// The data directory (the marker every child carries).
    pub data_dir: PathBuf,
    /// Where each process's pid, health and restarts are recorded.
    pub table: ProcessTable,
    /// Where their output goes.
    pub console: Console,
    /// Client for `/readyz` probes.
    pub http: reqwest::Client,
    /// Every task the supervisor spawns, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Where a process that will not start reports `(name, last line)`.
    pub fatal: mpsc::UnboundedSender<(String, String)>,
}

/// A running supervision task and the handles to act on it.
pub struct Supervised {
    /// The process name.
    pub name: String,
    /// Cancelling it stops the process for good.
    pub stop: CancellationToken,
    /// Commands for this process.
    pub control: mpsc::Sender<Control>,
    /// True while `/readyz` answers 200.
    pub ready: watch::Receiver<bool>,
    /// Ends when the process is stopped for good.
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts supervising every process of `specs`; each starts once its `after` list is ready.
pub fn start(ctx: &Arc<Ctx>, specs: &[ProcSpec]) -> Vec<Supervised> {
    let mut out: Vec<Supervised> = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let deps: Vec<watch::Receiver<bool>> = out
            .iter()
            .filter(|s| spec.after.contains(&s.name))
            .map(|s| s.ready.clone())
            .collect();
        let (ready_tx, ready) = watch::channel(false);
        let (control, commands) = mpsc::channel(8);
        let stop = CancellationToken::new();
        let task = ctx.tracker.spawn(supervise(
            ctx.clone(),
            spec.clone(),
            index,
            deps,
            ready_tx,
            stop.clone(),
            commands,
        ));
        out.push(Supervised {
            name: spec.name.clone(),
            stop,
            control,
            ready,
            task,
        });
    }
    out
}

/// Stops every process in reverse start order, each after the one started after it is gone.
pub async fn stop_all(procs: Vec<Supervised>) {
    for p in procs.into_iter().rev() {
        p.stop.cancel();
        let _ = p.task.await;
    }
}

enum Outcome {
    Exited(String),
    Stop,
    Command(Control),
}

async fn supervise(
    ctx: Arc<Ctx>,
    spec: ProcSpec,
    index: usize,
    deps: Vec<watch::Receiver<bool>>,
    ready_tx: watch::Sender<bool>,
    stop: CancellationToken,
    mut commands: mpsc::Receiver<Control>,
) {
    for mut dep in deps {
        tokio::select! {
            _ = dep.wait_for(|ready| *ready) => {}
            () = stop.cancelled() => return ctx.table.set_health(&spec.name, Health::Stopped),
        }
    }
    let mut backoff = BACKOFF_BASE;
    let mut ever_ready = false;
    let mut failures_before_ready = 0;
    loop {
        let started = Instant::now();
        let outcome = match spawn(&ctx, &spec, index) {
            Ok(mut child) => {
                ctx.table.spawned(&spec.name, child.id());
                let outcome = tokio::select! {
                    status = child.wait() => Outcome::Exited(match status {
                        Ok(s) => s.to_string(),
                        Err(e) => e.to_string(),
                    }),
                    () = stop.cancelled() => Outcome::Stop,
                    Some(cmd) = commands.recv() => Outcome::Command(cmd),
                    () = watch_health(&ctx, &spec, index, &ready_tx, &mut ever_ready) => Outcome::Stop,
                };
                let _ = ready_tx.send(false);
                match outcome {
                    Outcome::Stop | Outcome::Command(Control::Restart) => {
                        proc::stop_child(&mut child, Signal::SIGTERM, STOP_GRACE).await;
                    }
                    Outcome::Command(Control::Kill) => {
                        proc::stop_child(&mut child, Signal::SIGKILL, STOP_GRACE).await;
                    }
                    // Whatever it left in its group goes with it.
                    Outcome::Exited(_) => {
                        proc::stop_child(&mut child, Signal::SIGKILL, STOP_GRACE).await;
                    }
                }
                outcome
            }
            Err(e) => Outcome::Exited(format!("cannot start: {e}")),
        };
        let why = match outcome {
            Outcome::Stop => {
                ctx.table.exited(&spec.name, Health::Stopped, false);
                return;
            }
            Outcome::Command(Control::Restart) => {
                ctx.table.exited(&spec.name, Health::Backoff, true);
                ctx.console
                    .note(&format!("{} restarted on request", spec.name));
                continue;
            }
            Outcome::Command(Control::Kill) => "killed on request".to_owned(),
            Outcome::Exited(why) => why,
        };
        let (restarts, last) = ctx.table.exited(&spec.name, Health::Backoff, true);
        if !ever_ready {
            failures_before_ready += 1;
            if failures_before_ready >= STARTUP_ATTEMPTS {
                ctx.table.set_health(&spec.name, Health::Failed);
                let _ = ctx.fatal.send((spec.name.clone(), last));
                return;
            }
        }
        if started.elapsed() >= STABLE_AFTER {
            backoff = BACKOFF_BASE;
        }
        ctx.console.note(&format!(
            "{} exited ({why}); restart #{restarts} in {} ms",
            spec.name,
            backoff.as_millis()
        ));
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => {
                ctx.table.set_health(&spec.name, Health::Stopped);
                return;
            }
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn spawn(ctx: &Arc<Ctx>, spec: &ProcSpec, index: usize) -> std::io::Result<Child> {
    let mut cmd = Command::new(&ctx.exe);
    cmd.arg("run")
        .arg(spec.service)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(proc::PARENT_ENV, std::process::id().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Belt and braces: if this task is dropped without stopping the child, it dies too.
        .kill_on_drop(true);
    proc::own_group(&mut cmd, &ctx.data_dir);
    let mut child = cmd.spawn()?;
    if let Some(out) = child.stdout.take() {
        pump(ctx, spec, index, out);
    }
    if let Some(err) = child.stderr.take() {
        pump(ctx, spec, index, err);
    }
    Ok(child)
}

/// Copies a child's output to the console line by line, remembering the last line.
fn pump(
    ctx: &Arc<Ctx>,
    spec: &ProcSpec,
    index: usize,
    stream: impl AsyncRead + Unpin + Send + 'static,
) {
    let ctx2 = ctx.clone();
    let name = spec.name.clone();
    ctx.tracker.spawn(async move {
        let mut reader = BufReader::new(stream);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end();
                    ctx2.console.line(&name, index, line);
                    ctx2.table.last_line(&name, line);
                }
            }
        }
    });
}

/// Polls `/readyz` for as long as the process lives, keeping the table and `ready` current.
async fn watch_health(
    ctx: &Arc<Ctx>,
    spec: &ProcSpec,
    _index: usize,
    ready: &watch::Sender<bool>,
    ever_ready: &mut bool,
) {
    let url = format!("{}/readyz", spec.url());
    // Ready at least once since this process started (an unanswered probe is then `Down`, not
    // `Starting`).
    let mut was_ready = false;
    // Ready at the last probe: a process that was not ready (a paused process, a dependency
    // blackholed) and answers again is shown ready again.
    let mut ready_now = false;
    loop {
        let result = ctx
            .http
            .get(&url)
            .timeout(Duration::from_millis(2_500))
            .send()
            .await;
        let health = match result {
            Ok(r) if r.status().is_success() => Health::Ready,
            Ok(_) => Health::NotReady,
            Err(_) if !was_ready => Health::Starting,
            Err(_) => Health::Down,
        };
        if health == Health::Ready {
            if was_ready && !ready_now {
                ctx.table.set_health(&spec.name, Health::Ready);
            } else if !was_ready {
                if let Some(ms) = ctx.table.became_ready(&spec.name) {
                    if !ctx.console.is_tty() || *ever_ready {
                        ctx.console.note(&format!(
                            "{} ready in {ms} ms at {}",
                            spec.name,
                            spec.url()
                        ));
                    }
                } else {
                    ctx.table.set_health(&spec.name, Health::Ready);
                }
                *ever_ready = true;
            }
            was_ready = true;
            ready_now = true;
            let _ = ready.send(true);
        } else {
            if health != Health::Starting {
                ctx.table.set_health(&spec.name, health);
            }
            ready_now = false;
            let _ = ready.send(false);
        }
        // Fast until this process is ready, after a restart too: how long the way back took
        // is what chaos measures.
        let pause = if was_ready {
            POLL_RUNNING
        } else {
            POLL_STARTING
        };
        tokio::time::sleep(pause).await;
    }
}
