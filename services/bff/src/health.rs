//! `GET /api/health`: every service instance's own readiness report, and each piece of
//! infrastructure as the services that use it see it (a dependency is only as healthy as its
//! worst view), with latencies and reasons.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use lab_http::{CheckReport, Json, Probe, ReadinessReport};
use serde::{Deserialize, Serialize};

use crate::AppState;

/// How long the BFF waits for one instance's `/readyz`; probes inside it are bounded at 2 s, so a
/// slower answer means the instance itself is stuck.
const INSTANCE_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(2_500);

/// One service instance as the BFF saw it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceHealth {
    pub service: String,
    /// The instance's base URL.
    pub url: String,
    /// Its `X-Instance-Id`, when it answered.
    pub instance_id: Option<String>,
    /// `ready`, `degraded`, `not_ready` or `down` (no answer).
    pub status: String,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The instance's own dependency checks.
    pub checks: Vec<CheckReport>,
}

/// One infrastructure dependency, merged over every process that uses it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DependencyHealth {
    pub name: String,
    /// `up` when every observer reached it, else `down`.
    pub status: String,
    /// The slowest observed probe.
    pub latency_ms: f64,
    /// Which processes see it down, and why.
    pub reasons: BTreeMap<String, String>,
    /// Who probed it.
    pub observers: Vec<String>,
}

/// The body of `GET /api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterHealth {
    /// `healthy` when every instance is ready and every dependency up, else `degraded`.
    pub status: String,
    /// The BFF instance that answered.
    pub bff: String,
    pub services: Vec<InstanceHealth>,
    pub infrastructure: Vec<DependencyHealth>,
    /// Whether live events reach every replica's viewers (Redis stream) or only this one's.
    pub live: crate::live::BackplaneStatus,
    /// Where this BFF keeps its rate-limit buckets: `shared` (Redis) or `local` (Redis out).
    pub rate_limit: crate::rate_limit::RateLimitHealth,
}

/// Health of every service instance and dependency.
#[utoipa::path(get, path = "/api/health", tag = "bff", responses((status = 200, body = ClusterHealth)))]
pub(crate) async fn get_health(State(state): State<AppState>) -> Json<ClusterHealth> {
    Json(cluster_health(&state).await)
}

/// Probes every instance and dependency once, for `/api/health` and the live stream.
pub(crate) async fn cluster_health(state: &AppState) -> ClusterHealth {
    let probes = state
        .settings
        .instances()
        .into_iter()
        .map(|(service, url)| probe_instance(&state.http, service, url));
    let services = futures::future::join_all(probes).await;

    let bff_name = state.instance_id.clone();
    let mut own: Vec<CheckReport> = Vec::new();
    let redis_probe = lab_cache::RedisProbe {
        redis: state.redis.clone(),
        critical: false,
    };
    own.push(timed(&redis_probe).await);
    if let Some(addr) = &state.settings.vault_addr {
        own.push(probe_vault(&state.http, addr).await);
    }

    let mut deps: BTreeMap<String, DependencyHealth> = BTreeMap::new();
    let observations = services
        .iter()
        .flat_map(|i| {
            i.checks
                .iter()
                .map(move |c| (i.instance_id.clone().unwrap_or_else(|| i.url.clone()), c))
        })
        .chain(own.iter().map(|c| (bff_name.clone(), c)));
    for (observer, check) in observations {
        let dep = deps
            .entry(check.name.clone())
            .or_insert_with(|| DependencyHealth {
                name: check.name.clone(),
                status: "up".into(),
                latency_ms: 0.0,
                reasons: BTreeMap::new(),
                observers: Vec::new(),
            });
        dep.latency_ms = dep.latency_ms.max(check.latency_ms);
        if check.status != "up" {
            dep.status = "down".into();
            dep.reasons
                .insert(observer.clone(), check.reason.clone().unwrap_or_default());
        }
        dep.observers.push(observer);
    }
    let infrastructure: Vec<DependencyHealth> = deps.into_values().collect();
    let healthy = services.iter().all(|s| s.status == "ready")
        && infrastructure.iter().all(|d| d.status == "up");
    ClusterHealth {
        status: if healthy { "healthy" } else { "degraded" }.into(),
        bff: state.instance_id.clone(),
        services,
        infrastructure,
        live: state.live.status(),
        rate_limit: state.edge.rate_limiter().health(),
    }
}

/// While this replica leads, probes the cluster every `live.health_every_ms` and pushes the
/// report to every viewer; the probes are shared by all viewers of all replicas.
pub(crate) async fn push_loop(
    state: AppState,
    leadership: crate::live::Leadership,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let period = std::time::Duration::from_millis(state.settings.live.health_every_ms.max(100));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if !leadership.is_leader() {
            continue;
        }
        let report = cluster_health(&state).await;
        if let Ok(data) = serde_json::to_value(&report) {
            state.live.publish(lab_contracts::live::LiveEvent::public(
                state.instance_id.clone(),
                lab_contracts::live::LiveBody::Health(data),
            ));
        }
    }
}

async fn timed(probe: &dyn Probe) -> CheckReport {
    let started = Instant::now();
    let outcome = tokio::time::timeout(lab_http::PROBE_TIMEOUT, probe.check())
        .await
        .unwrap_or_else(|_| Err("no answer in time".into()));
    CheckReport {
        name: probe.name().into(),
        status: if outcome.is_ok() { "up" } else { "down" }.into(),
        critical: probe.critical(),
        latency_ms: ms(started),
        reason: outcome.err(),
    }
}

fn ms(started: Instant) -> f64 {
    (started.elapsed().as_secs_f64() * 100_000.0).round() / 100.0
}

async fn probe_instance(http: &reqwest::Client, service: String, url: String) -> InstanceHealth {
    let started = Instant::now();
    let result = http
        .get(format!("{url}/readyz"))
        .timeout(INSTANCE_TIMEOUT)
        .send()
        .await;
    let latency_ms = ms(started);
    match result {
        Ok(resp) => {
            let instance_id = resp
                .headers()
                .get(&lab_http::X_INSTANCE_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            match resp.json::<ReadinessReport>().await {
                Ok(report) => {
                    let reason = report
                        .checks
                        .iter()
                        .filter(|c| c.status != "up")
                        .map(|c| format!("{}: {}", c.name, c.reason.as_deref().unwrap_or("down")))
                        .collect::<Vec<_>>();
                    InstanceHealth {
                        service,
                        url,
                        instance_id: instance_id.or(Some(report.instance)),
                        status: report.status,
                        latency_ms,
                        reason: (!reason.is_empty()).then(|| reason.join("; ")),
                        checks: report.checks,
                    }
                }
                Err(e) => down(
                    service,
                    url,
                    instance_id,
                    latency_ms,
                    format!("unreadable /readyz: {e}"),
                ),
            }
        }
        Err(e) => {
            let reason = if e.is_timeout() {
                format!("no answer within {} ms", INSTANCE_TIMEOUT.as_millis())
            } else if e.is_connect() {
                "connection refused: the process is not listening".into()
            } else {
                e.to_string()
            };
            down(service, url, None, latency_ms, reason)
        }
    }
}

fn down(
    service: String,
    url: String,
    instance_id: Option<String>,
    latency_ms: f64,
    reason: String,
) -> InstanceHealth {
    InstanceHealth {
        service,
        url,
        instance_id,
        status: "down".into(),
        latency_ms,
        reason: Some(reason),
        checks: Vec::new(),
    }
}

/// OpenBao's own health endpoint: 200 when unsealed and active.
async fn probe_vault(http: &reqwest::Client, addr: &str) -> CheckReport {
    let started = Instant::now();
    let result = http
        .get(format!("{}/v1/sys/health", addr.trim_end_matches('/')))
        .timeout(lab_http::PROBE_TIMEOUT)
        .send()
        .await;
    let outcome = match result {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("sys/health answered {}", r.status())),
        Err(e) => Err(e.to_string()),
    };
    CheckReport {
        name: "openbao".into(),
        status: if outcome.is_ok() { "up" } else { "down" }.into(),
        critical: false,
        latency_ms: ms(started),
        reason: outcome.err(),
    }
}
