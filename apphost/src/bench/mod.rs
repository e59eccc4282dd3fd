//! `lab bench <target>`: measurements of Lab against a peer run in the same session on the same
//! machine, reported as ratios (absolute numbers move 10–25 % between runs here; ratios much less).
//!
//! Practice from `BENCH.md`: the system under test and its peer are pinned to core 1, the load
//! generator to core 0; the machine is checked for quiet first; each figure is the median of 3.

mod bff;
mod catalog;
mod checkout;
mod floor;
mod measure;
mod outbox;
mod peer;
mod pgbench;
mod recovery;
mod rotation;

use clap::{Args, Subcommand};

pub use measure::{own_exe, quantile};
pub use peer::serve_peer;

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    target: Target,
}

#[derive(Subcommand)]
enum Target {
    /// Proxied GETs through the BFF vs nginx proxy_pass; added latency; rate-limit accuracy.
    Bff(bff::BffArgs),
    /// Cached product reads vs bare axum, the cross-replica stale window, concurrent writers.
    Catalog(catalog::CatalogArgs),
    /// Completed orders/s through the whole saga vs pgbench TPC-B; place→Completed latency.
    Checkout(checkout::CheckoutArgs),
    /// Outbox relay and inbox consumer vs raw lapin; commit→publish latency.
    Outbox(outbox::OutboxArgs),
    /// Fault end → breakers closed and every instance healthy, after a blackhole or reset of a
    /// BFF → catalog edge (against a running `lab up`, or `--up`).
    Recovery(recovery::RecoveryArgs),
    /// Requests through a database route while the login is rotated: failures, p99 ratio, time.
    Rotation(rotation::RotationArgs),
    /// The bare axum peer the benchmarks compare against (started by them, pinned to a core).
    #[command(hide = true)]
    Peer(peer::PeerArgs),
    /// A bare hyper proxy, the floor the BFF's proxied read is measured against.
    #[command(hide = true)]
    Floor(floor::FloorArgs),
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    match args.target {
        Target::Bff(a) => bff::run(a).await,
        Target::Catalog(a) => catalog::run(a).await,
        Target::Checkout(a) => checkout::run(a).await,
        Target::Outbox(a) => outbox::run(a).await,
        Target::Recovery(a) => recovery::run(a).await,
        Target::Rotation(a) => rotation::run(a).await,
        Target::Peer(a) => serve_peer(a).await,
        Target::Floor(a) => floor::serve_floor(a).await,
    }
}
