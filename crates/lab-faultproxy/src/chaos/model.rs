//! The registry's vocabulary: scopes, requesters and their expiry bounds, errors, and the views
//! and events the BFF serialises for `GET /api/chaos` and the /chaos page.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::effect::FaultId;
use crate::fault::{Fault, FaultError};
use crate::stats::EdgeStats;

/// The bound for faults a visitor applies: long enough to watch the effect, short
/// enough that an abandoned tab does not leave the cluster broken.
pub const VISITOR_MAX_TTL: Duration = Duration::from_secs(120);
/// The admin may hold a fault through a whole experiment or soak run.
pub const ADMIN_MAX_TTL: Duration = Duration::from_secs(3_600);
/// What a fault applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "name", rename_all = "snake_case")]
pub enum Scope {
    /// One edge, by name.
    Edge(String),
    /// Every edge that lists this target.
    Target(String),
}

/// Who applies a fault, which bounds how long it may last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    /// Anyone on the /chaos page: short faults only.
    Visitor,
    /// The operator (`lab chaos`, the admin role): experiments and soak runs.
    Admin,
}

impl Requester {
    /// The longest expiry this requester may ask for.
    pub fn max_ttl(self) -> Duration {
        match self {
            Requester::Visitor => VISITOR_MAX_TTL,
            Requester::Admin => ADMIN_MAX_TTL,
        }
    }
}

/// Why a registry call was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChaosError {
    /// A parameter out of range (422).
    #[error(transparent)]
    Fault(#[from] FaultError),
    /// The expiry is zero or longer than the requester may ask for (422).
    #[error("a fault must last between 1 ms and {max:?}, not {ttl:?}")]
    Expiry { ttl: Duration, max: Duration },
    /// No edge has this name or target (422: the scope is part of the request body).
    #[error("no edge matches {0:?}")]
    UnknownScope(Scope),
    /// No active fault has this id (404).
    #[error("no active fault has id {0}")]
    UnknownFault(FaultId),
    /// Two proxies under one name (a wiring mistake in the apphost).
    #[error("an edge named {0} is already registered")]
    DuplicateEdge(String),
}

/// An active fault as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActiveFault {
    /// Stable for the fault's life.
    pub id: FaultId,
    /// Where it applies.
    pub scope: Scope,
    /// What it does.
    pub fault: Fault,
    /// Who applied it last.
    pub requester: Requester,
    /// Time left before it is removed by itself.
    pub expires_in_ms: u64,
    /// The edges it covers now.
    pub edges: Vec<String>,
}

/// Why a fault went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Removal {
    /// Its time ran out.
    Expired,
    /// Removed by id.
    Removed,
    /// Removed with all the others.
    Cleared,
}

/// One change, as the /chaos page receives it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ChaosEvent {
    /// A new fault is in force.
    Applied { fault: ActiveFault },
    /// A fault was re-applied: new parameters, later expiry, same id.
    Extended { fault: ActiveFault },
    /// A fault is gone.
    Removed { id: FaultId, reason: Removal },
    /// A proxy was registered.
    EdgeAdded { edge: String },
    /// A proxy was unregistered.
    EdgeRemoved { edge: String },
}

/// One edge as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeView {
    /// `catalog-1→postgres`.
    pub name: String,
    /// Where the edge's client connects.
    pub listen: SocketAddr,
    /// Where the proxy forwards.
    pub upstream: SocketAddr,
    /// The targets a fault can name to cover this edge.
    pub targets: Vec<String>,
    /// The edge's counters.
    pub stats: EdgeStats,
}

/// The whole registry, for `GET /api/chaos`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChaosState {
    /// Every registered edge, by name.
    pub edges: Vec<EdgeView>,
    /// Every active fault, by id.
    pub faults: Vec<ActiveFault>,
}
