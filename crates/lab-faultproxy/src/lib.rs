//! Lab's fault-injecting TCP proxy, the chaos half of `lab up`.
//!
//! The apphost runs one [`Proxy`] per edge (each service → PostgreSQL, Redis, RabbitMQ, OpenBao;
//! BFF → each service instance) in its own process and registers each with the [`Chaos`]
//! registry under the edge's targets. Faults ([`Fault`]: latency, bandwidth, reset, blackhole,
//! refuse, slow close, cut after N bytes) are applied to an edge or a whole target with an
//! expiry, reach live connections at their next chunk, and expire by themselves. With no fault
//! in force a connection is a plain copy loop plus one atomic load per chunk; [`bench`] measures
//! what that costs against a direct connection.
//!
//! ```no_run
//! # async fn wire() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use lab_faultproxy::{Chaos, Direction, Fault, Proxy, ProxyConfig, Requester, Scope};
//! use tokio_util::{sync::CancellationToken, task::TaskTracker};
//!
//! let (tracker, shutdown) = (TaskTracker::new(), CancellationToken::new());
//! let chaos = Chaos::start(&tracker, shutdown.clone());
//! let proxy = Proxy::start(
//!     ProxyConfig {
//!         name: "catalog-1→postgres".into(),
//!         listen: "127.0.0.1:0".parse()?,
//!         upstream: "127.0.0.1:5432".parse()?,
//!     },
//!     &shutdown,
//! )
//! .await?;
//! chaos.add_edge(&proxy, ["catalog-1", "postgres"])?;
//! // catalog-1 is given `proxy.local_addr()` as its database address.
//! let latency = Fault::Latency { ms: 200, jitter_ms: 50, direction: Direction::Both };
//! chaos.apply(Scope::Target("postgres".into()), latency, Duration::from_secs(60), Requester::Visitor)?;
//! # Ok(())
//! # }
//! ```

pub mod bench;
mod chaos;
mod effect;
mod fault;
mod pipe;
mod proxy;
mod stats;

pub use chaos::{
    ADMIN_MAX_TTL, ActiveFault, Chaos, ChaosError, ChaosEvent, ChaosState, EdgeView, Removal,
    Requester, Scope, VISITOR_MAX_TTL,
};
pub use effect::FaultId;
pub use fault::{
    Direction, Fault, FaultError, FaultKind, MAX_LATENCY_MS, MAX_SLOW_CLOSE_MS,
    MIN_BANDWIDTH_BYTES_PER_S,
};
pub use proxy::{Proxy, ProxyConfig, ProxyError};
pub use stats::EdgeStats;
