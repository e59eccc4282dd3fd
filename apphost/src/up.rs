//! `lab up`: infrastructure, then every service in health-gated order, a live status table while
//! starting, the URLs once ready, supervision until Ctrl-C/SIGTERM, then an ordered stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::{self, InfraArgs};
use crate::console::Console;
use crate::control::{self, ControlState};
use crate::datadir::{ApphostInfo, DataDir, Secrets, State};
use crate::faults::ProcessFaults;
use crate::supervisor::{self, Ctx, Supervised};
use crate::table::{Health, ProcessInfo, ProcessTable};
use crate::{plan, ports, proc, status};

/// Arguments of `lab up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Where private instances keep their data, ports and pids.
    #[arg(long, default_value = ".lab", env = "LAB_DATA_DIR")]
    pub data_dir: PathBuf,
    /// The BFF's public address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub infra: InfraArgs,
}

/// Runs the cluster until Ctrl-C or SIGTERM.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let dir = DataDir::open(&args.data_dir)?;
    if let Some(info) = running_apphost(&dir) {
        anyhow::bail!(
            "an apphost is already running for {} (pid {}): use it (`lab status`), or stop it with `lab down`",
            dir.root().display(),
            info.pid
        );
    }
    if args.listen.port() != 0 && !ports::is_free_addr(args.listen) {
        anyhow::bail!(
            "{} (the BFF's address) is already in use: stop what holds it, or pass --listen <addr>",
            args.listen
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));

    let mut state = State::load(&dir)?;
    let secrets = Secrets::load_or_create(&dir)?;
    let infra = tokio::select! {
        r = cluster::bring_up(&dir, &args.infra, &mut state, &secrets) => r?,
        () = shutdown.cancelled() => anyhow::bail!(
            "interrupted while starting the infrastructure; what started keeps running (`lab down` stops it)"
        ),
    };
    let infra_time = t0.elapsed();

    let names = plan::process_names();
    let mut addrs: BTreeMap<String, SocketAddr> = BTreeMap::new();
    // The BFF's port is not remembered; chosen last, it cannot be one a service picks after it.
    let (bff, services): (Vec<_>, Vec<_>) = names.iter().partition(|(s, _, _)| *s == "bff");
    for (_, _, name) in services {
        let addr = ports::loopback(ports::assign(&mut state, name, false)?);
        addrs.insert(name.clone(), addr);
    }
    for (_, _, name) in bff {
        let mut addr = args.listen;
        if addr.port() == 0 {
            addr.set_port(ports::unremembered(&state, name)?);
        }
        addrs.insert(name.clone(), addr);
    }
    state.save(&dir)?;
    let mut specs = plan::plan(&infra.wiring, |n| {
        addrs.get(n).copied().unwrap_or(ports::loopback(0))
    });
    // Fault proxies on every edge, alive until the apphost stops (after its children).
    let edges_stop = CancellationToken::new();
    let edges_tracker = TaskTracker::new();
    let edges = crate::edges::put_on_edges(&mut specs, &edges_stop, &edges_tracker)
        .await
        .context("cannot put fault proxies on the edges")?;

    // The control API's address is known before the services start, so the BFF is told where
    // to relay chaos to.
    let control_listener = control::bind()
        .await
        .context("cannot open the control API")?;
    let control_addr = control_listener.local_addr()?;
    for bff in specs.iter_mut().filter(|s| s.service == "bff") {
        bff.env.push((
            format!("{}CHAOS__APPHOST_URL", lab_config::env_prefix("bff")),
            format!("http://{control_addr}"),
        ));
    }

    let table = ProcessTable::default();
    for row in infra.rows.iter().cloned() {
        table.add(row);
    }
    for s in &specs {
        table.add(ProcessInfo {
            name: s.name.clone(),
            kind: "service".into(),
            replica: s.replica,
            pid: None,
            port: s.listen.port(),
            url: s.url(),
            health: Health::Waiting,
            restarts: 0,
            uptime_s: None,
            ready_ms: None,
            last_error: None,
        });
    }
    let width = specs.iter().map(|s| s.name.len()).max().unwrap_or(3);
    let console = Console::new(width);
    for line in &infra.summary {
        console.note(line);
    }
    let (fatal_tx, mut fatal_rx) = mpsc::unbounded_channel();
    let tracker = TaskTracker::new();
    let ctx = Arc::new(Ctx {
        exe: std::env::current_exe().context("cannot find the lab binary itself")?,
        data_dir: dir.root().to_path_buf(),
        table: table.clone(),
        console: console.clone(),
        http: reqwest::Client::builder()
            // Loopback: a connect that takes longer means the process is not listening yet.
            .connect_timeout(Duration::from_millis(300))
            .build()?,
        tracker: tracker.clone(),
        fatal: fatal_tx,
    });
    let procs = supervisor::start(&ctx, &specs);
    let control_stop = CancellationToken::new();
    let commands: BTreeMap<String, _> = procs
        .iter()
        .map(|p| (p.name.clone(), p.control.clone()))
        .collect();
    let commands = Arc::new(commands);
    let relaunch = infra
        .rows
        .iter()
        .any(|r| r.pid.is_some())
        .then(|| cluster::Relaunch {
            dir: dir.clone(),
            secrets: secrets.clone(),
            dist_port: state.ports.get("rabbitmq-dist").copied().unwrap_or(0),
        });
    let process_faults = ProcessFaults::start(
        table.clone(),
        commands.clone(),
        relaunch,
        edges.chaos.clone(),
        &tracker,
        control_stop.clone(),
    );
    let control_state = ControlState {
        table: table.clone(),
        commands,
        chaos: edges.chaos.clone(),
        processes: process_faults.clone(),
    };
    let bff_url = format!(
        "http://{}",
        addrs.get("bff").copied().unwrap_or(args.listen)
    );
    control::serve(
        control_listener,
        control_state,
        control_stop.clone(),
        &tracker,
    );
    let info = ApphostInfo {
        pid: std::process::id(),
        control_url: format!("http://{control_addr}"),
        bff_url: bff_url.clone(),
    };
    dir.write_json(ApphostInfo::FILE, &info, 0o644)?;

    let started = wait_ready(&procs, &table, &console, &mut fatal_rx, &shutdown, t0).await;
    let result = match started {
        Started::Ready => {
            print_ready(&console, &table, &info, t0.elapsed(), infra_time);
            shutdown.cancelled().await;
            Ok(())
        }
        Started::Interrupted => Ok(()),
        Started::Failed(name, line) => {
            // `lab run` already says "<service> did not start: why"; do not say it twice.
            let why = line.trim_start_matches("lab: ");
            Err(if why.contains("did not start") {
                anyhow::anyhow!("{name}: {why}")
            } else {
                anyhow::anyhow!("{name} could not start: {why}")
            })
        }
    };
    console.note("stopping services (infrastructure keeps running; `lab down` stops it)");
    // Nothing stays paused: not the services about to be stopped, not the infrastructure that
    // keeps running.
    process_faults.resume_all();
    supervisor::stop_all(procs).await;
    control_stop.cancel();
    // The services are gone: their edges can close.
    edges_stop.cancel();
    drop(edges);
    edges_tracker.close();
    tracker.close();
    // Log pumps end when their pipes close; the control server when its token fires.
    let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
    dir.remove(ApphostInfo::FILE);
    result
}

enum Started {
    Ready,
    Interrupted,
    Failed(String, String),
}

/// Waits for every service to be ready, drawing the live table meanwhile.
async fn wait_ready(
    procs: &[Supervised],
    table: &ProcessTable,
    console: &Console,
    fatal: &mut mpsc::UnboundedReceiver<(String, String)>,
    shutdown: &CancellationToken,
    t0: Instant,
) -> Started {
    loop {
        if procs.iter().all(|p| *p.ready.borrow()) {
            console.end_live();
            return Started::Ready;
        }
        console.live(status::live(&table.snapshot(), t0.elapsed()));
        tokio::select! {
            Some((name, line)) = fatal.recv() => {
                console.end_live();
                return Started::Failed(name, line);
            }
            () = shutdown.cancelled() => {
                console.end_live();
                return Started::Interrupted;
            }
            // The live table redraws ten times a second; readiness is checked as often.
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn print_ready(
    console: &Console,
    table: &ProcessTable,
    info: &ApphostInfo,
    total: Duration,
    infra: Duration,
) {
    let rows = table.snapshot();
    for line in status::render(&rows) {
        console.note(&line);
    }
    let slowest = rows
        .iter()
        .filter(|r| r.kind == "service")
        .filter_map(|r| r.ready_ms.map(|ms| (ms, r.name.as_str())))
        .max();
    console.note(&format!(
        "all {} service processes ready in {:.2} s (infrastructure {:.2} s{})",
        rows.iter().filter(|r| r.kind == "service").count(),
        total.as_secs_f64(),
        infra.as_secs_f64(),
        slowest
            .map(|(ms, n)| format!(", slowest service {n} {ms} ms"))
            .unwrap_or_default()
    ));
    console.note(&format!("BFF          {}", info.bff_url));
    console.note(&format!("health       {}/api/health", info.bff_url));
    console.note(&format!(
        "control API  {}/processes  (`lab status`)",
        info.control_url
    ));
    console.note("Ctrl-C stops the services; `lab down` also stops the infrastructure");
}

/// The apphost recorded in `dir`, if its process is alive.
pub fn running_apphost(dir: &DataDir) -> Option<ApphostInfo> {
    let info: ApphostInfo = dir.read_json(ApphostInfo::FILE).ok().flatten()?;
    (proc::alive(info.pid) && info.pid != std::process::id()).then_some(info)
}

/// Cancels `token` on Ctrl-C, SIGTERM or SIGHUP (the terminal closed): each stops in order.
async fn watch_signals(token: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let ctrl_c = tokio::signal::ctrl_c();
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(mut term), Ok(mut hup)) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        }
        _ => {
            let _ = ctrl_c.await;
        }
    }
    token.cancel();
}
