//! `lab`: the one binary. `lab run <service>` runs one service as its own process; the other
//! verbs belong to the apphost.

mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lab",
    version,
    about = "Lab: a Rust microservice cluster under live fault injection"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one service in this process (settings from LAB_<SERVICE>__… variables).
    Run(run::RunArgs),
    /// Run the whole cluster: private infrastructure (or existing servers) and every service.
    Up(lab_apphost::UpArgs),
    /// Stop the running apphost and the private infrastructure it started (data is kept).
    Down(lab_apphost::DownArgs),
    /// Show every process of the running apphost: pid, port, health, restarts.
    Status(lab_apphost::StatusArgs),
    /// Measure Lab against a peer run in the same session (ratios, pinned cores, median of 3).
    Bench(lab_apphost::bench::BenchArgs),
    /// Journeys through the BFF under random faults on every layer, then the invariants' verdict.
    Soak(lab_apphost::SoakArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A process confined to one CPU (taskset, a container's CPU limit) gains nothing from
    // work stealing between threads: it runs on tokio's current-thread scheduler, as nginx runs
    // one single-threaded worker per core. Blocking work still gets its own threads.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lab: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args).await,
            Command::Up(args) => lab_apphost::up(args).await,
            Command::Down(args) => lab_apphost::down(args).await,
            Command::Status(args) => lab_apphost::status(args).await,
            Command::Bench(args) => lab_apphost::bench::bench(args).await,
            Command::Soak(args) => lab_apphost::soak(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, the whole chain: what failed and, from the inner error, how to fix it.
            eprintln!("lab: {e:#}");
            ExitCode::FAILURE
        }
    }
}
