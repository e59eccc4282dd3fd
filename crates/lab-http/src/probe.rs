//! Readiness: each dependency really probed (a query, a PING, an open AMQP channel), reported
//! with its latency and, when down, the reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// How long one probe may take before it counts as down; a dependency slower than this cannot
/// serve a request within the callers' timeouts anyway.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency check.
pub trait Probe: Send + Sync + 'static {
    /// The dependency's name in reports: `postgres`, `redis`, `rabbitmq`, `openbao`, a service.
    fn name(&self) -> &str;
    /// Whether the service is unready without it (503) or only degraded (still 200).
    fn critical(&self) -> bool {
        true
    }
    /// Probes once; `Err` carries the reason shown to operators.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// The state of one dependency as a probe saw it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema, PartialEq)]
pub struct CheckReport {
    pub name: String,
    /// `up` or `down`.
    pub status: String,
    pub critical: bool,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The body of `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReadinessReport {
    pub service: String,
    pub instance: String,
    /// `ready`, `degraded` (a non-critical dependency is down) or `not_ready`.
    pub status: String,
    pub checks: Vec<CheckReport>,
}

/// Every probe of one service.
#[derive(Clone, Default)]
pub struct Readiness {
    probes: Vec<Arc<dyn Probe>>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, probe: impl Probe) -> Self {
        self.probes.push(Arc::new(probe));
        self
    }

    /// Runs every probe concurrently, each bounded by [`PROBE_TIMEOUT`].
    pub async fn check(&self, service: &str, instance: &str) -> ReadinessReport {
        let checks =
            futures::future::join_all(self.probes.iter().map(|p| run_probe(p.as_ref()))).await;
        let status = if checks.iter().any(|c| c.critical && c.status != "up") {
            "not_ready"
        } else if checks.iter().any(|c| c.status != "up") {
            "degraded"
        } else {
            "ready"
        };
        ReadinessReport {
            service: service.into(),
            instance: instance.into(),
            status: status.into(),
            checks,
        }
    }
}

async fn run_probe(probe: &dyn Probe) -> CheckReport {
    let started = Instant::now();
    let outcome = match tokio::time::timeout(PROBE_TIMEOUT, probe.check()).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    };
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    CheckReport {
        name: probe.name().into(),
        status: if outcome.is_ok() { "up" } else { "down" }.into(),
        critical: probe.critical(),
        latency_ms,
        reason: outcome.err(),
    }
}
