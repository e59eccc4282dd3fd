//! `lab run <service>`: one service as its own process, until SIGTERM or Ctrl-C.

use anyhow::Context;
use clap::{Args, ValueEnum};
use lab_http::Application;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Every service the binary can run.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Service {
    Bff,
    Identity,
    Catalog,
    Orders,
    Payments,
    Checkout,
    Psp,
}

#[derive(Args)]
pub struct RunArgs {
    /// The service to run.
    service: Service,
    /// Listen address, overriding LAB_<SERVICE>__HTTP__LISTEN.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

fn settings<T: DeserializeOwned + Serialize + Default>(name: &str) -> anyhow::Result<T> {
    lab_config::load::<T>(name).with_context(|| format!("settings of {name}"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    lab_telemetry::init_logging();
    die_with_apphost()?;
    let shutdown = CancellationToken::new();
    let app = build(args.service, args.listen, shutdown.clone()).await?;
    let signal = shutdown.clone();
    tokio::spawn(async move {
        lab_http::shutdown_signal().await;
        tracing::info!("shutdown requested; draining");
        signal.cancel();
    });
    app.run().await.context("serving HTTP")?;
    Ok(())
}

macro_rules! build_service {
    ($krate:ident, $listen:expr, $shutdown:expr) => {{
        let mut s: $krate::Settings = settings($krate::NAME)?;
        if let Some(addr) = $listen {
            s.http.listen = addr;
        }
        $krate::build(s, $shutdown)
            .await
            .with_context(|| format!("{} did not start", $krate::NAME))
    }};
}

async fn build(
    service: Service,
    listen: Option<std::net::SocketAddr>,
    shutdown: CancellationToken,
) -> anyhow::Result<Application> {
    match service {
        Service::Bff => build_service!(lab_bff, listen, shutdown),
        Service::Identity => build_service!(lab_identity, listen, shutdown),
        Service::Catalog => build_service!(lab_catalog, listen, shutdown),
        Service::Orders => build_service!(lab_orders, listen, shutdown),
        Service::Payments => build_service!(lab_payments, listen, shutdown),
        Service::Checkout => build_service!(lab_checkout, listen, shutdown),
        Service::Psp => build_service!(lab_psp, listen, shutdown),
    }
}

/// Under `lab up`, asks the kernel to SIGTERM this process when the apphost dies, even by
/// SIGKILL, so no service outlives it. Done here, in the child itself, because setting it between
/// fork and exec (`pre_exec`) would need `unsafe`, which the workspace forbids.
fn die_with_apphost() -> anyhow::Result<()> {
    let Ok(parent) = std::env::var(lab_apphost::PARENT_ENV) else {
        return Ok(());
    };
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .context("cannot tie this process to the apphost's lifetime")?;
    // The apphost may have died before the line above ran: then our parent is already another.
    if parent != nix::unistd::getppid().to_string() {
        anyhow::bail!("the apphost (pid {parent}) is gone; not starting");
    }
    Ok(())
}
