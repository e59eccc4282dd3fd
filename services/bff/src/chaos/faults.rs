//! HTTP-level faults on the BFF → service edges, the part of chaos the BFF applies itself:
//! `GET /api/chaos` (targets, active faults with time left, limits), `POST /api/chaos/faults`
//! (an error status with a probability and/or added latency on every replica of a service, for
//! at most two minutes), `DELETE /api/chaos/faults/{id}`.
//!
//! Faults live in Redis (one hash, `chaos:faults`), so every BFF replica applies the same ones
//! and a restarted BFF picks them up; each replica reconciles its proxy's fault slots with the
//! hash every half second. Nothing stays broken: every fault carries its expiry, the proxy stops
//! applying it at that instant, and whichever replica notices first removes it and tells every
//! viewer. Re-applying a fault to the same service replaces its parameters and extends it under
//! the same id. Faults injected here do not count against the breakers unless asked to
//! (`trips_breaker`), so a latency test does not open circuits by accident.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use lab_contracts::live::{ConsoleLine, LiveBody, LiveEvent};
use lab_http::{Json, Problem};
use lab_resilience::HttpFault;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::AppState;

/// A visitor's fault lasts at most this long (the bound: nothing stays broken).
pub const MAX_DURATION_S: u64 = 120;
/// Faults active at once, across every visitor: enough to combine a few, never a wall of them.
pub const MAX_ACTIVE: usize = 5;
/// How often each replica reconciles its proxy with the shared faults.
const RECONCILE_EVERY: Duration = Duration::from_millis(500);

/// One active fault.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FaultRecord {
    pub id: Uuid,
    /// The service whose every replica the fault applies to.
    pub target: String,
    pub fault: HttpFault,
    /// Unix ms when it ends by itself.
    pub expires_at_ms: u64,
    /// Left at the time of reading (ms).
    #[serde(default)]
    pub expires_in_ms: u64,
}

/// `POST /api/chaos/faults`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFault {
    /// A proxied service: `catalog`, `orders`, `identity`, `payments`.
    pub target: String,
    /// Status of the failing share of calls (500–599); none for latency alone.
    #[serde(default)]
    pub status: Option<u16>,
    /// Share of calls that fail (0–1; default 1 when a status is given).
    #[serde(default)]
    pub probability: Option<f64>,
    /// Added to every call (0–10,000 ms).
    #[serde(default)]
    pub latency_ms: u64,
    /// Seconds until it ends by itself (1–120).
    pub duration_s: u64,
    /// Whether the injected failures count against the breakers.
    #[serde(default)]
    pub trips_breaker: bool,
}

/// `GET /api/chaos`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChaosState {
    /// Services a fault can target.
    pub targets: Vec<String>,
    pub faults: Vec<FaultRecord>,
    /// The bounds a visitor's fault must keep.
    pub limits: Limits,
    /// Fault kinds that exist but are not applied by the BFF (process faults and TCP faults on
    /// the dependency edges belong to `lab up`), shown as such rather than hidden.
    pub not_here: Vec<&'static str>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Limits {
    pub max_duration_s: u64,
    pub max_active: usize,
    pub max_latency_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn key(state: &AppState) -> String {
    state.redis.key("chaos:faults")
}

/// Every stored fault that has not expired, with its time left.
async fn active(state: &AppState) -> Result<Vec<FaultRecord>, redis::RedisError> {
    let mut conn = state.redis.conn();
    let all: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(key(state))
        .query_async(&mut conn)
        .await?;
    let now = now_ms();
    let mut faults: Vec<FaultRecord> = all
        .values()
        .filter_map(|json| serde_json::from_str::<FaultRecord>(json).ok())
        .filter(|f| f.expires_at_ms > now)
        .map(|mut f| {
            f.expires_in_ms = f.expires_at_ms - now;
            f
        })
        .collect();
    faults.sort_by_key(|f| f.expires_at_ms);
    Ok(faults)
}

fn redis_down(e: &redis::RedisError) -> Problem {
    Problem::unavailable("redis", format!("chaos state lives in Redis: {e}"))
}

fn targets(state: &AppState) -> Vec<String> {
    let mut targets: Vec<String> = state
        .settings
        .instances()
        .into_iter()
        .map(|(service, _)| service)
        .filter(|s| s != "psp")
        .collect();
    targets.dedup();
    targets
}

/// Targets, active faults and limits.
#[utoipa::path(get, path = "/api/chaos", tag = "chaos", responses(
    (status = 200, body = ChaosState), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn get_chaos(State(state): State<AppState>) -> Result<Json<ChaosState>, Problem> {
    let faults = active(&state).await.map_err(|e| redis_down(&e))?;
    Ok(Json(ChaosState {
        targets: targets(&state),
        faults,
        limits: limits(),
        not_here: vec![
            "pause",
            "kill",
            "restart",
            "tcp-latency",
            "reset",
            "blackhole",
            "bandwidth",
        ],
    }))
}

fn limits() -> Limits {
    Limits {
        max_duration_s: MAX_DURATION_S,
        max_active: MAX_ACTIVE,
        max_latency_ms: lab_resilience::fault::MAX_LATENCY.as_millis() as u64,
    }
}

/// Applies (or extends) a fault on every replica of a service.
#[utoipa::path(post, path = "/api/chaos/faults", tag = "chaos", request_body = NewFault, responses(
    (status = 201, body = FaultRecord), (status = 422, body = lab_http::Problem),
    (status = 409, body = lab_http::Problem, description = "too many faults at once"),
    (status = 503, body = lab_http::Problem)))]
pub(crate) async fn post_fault(
    State(state): State<AppState>,
    Json(body): Json<NewFault>,
) -> Result<Response, Problem> {
    if !targets(&state).contains(&body.target) {
        return Err(Problem::invalid_field(
            "target",
            format!(
                "`{}` is not a service the BFF proxies: {}",
                body.target,
                targets(&state).join(", ")
            ),
        ));
    }
    if !(1..=MAX_DURATION_S).contains(&body.duration_s) {
        return Err(Problem::invalid_field(
            "duration_s",
            format!("between 1 and {MAX_DURATION_S}"),
        ));
    }
    let fault = HttpFault {
        status: body.status,
        probability: body
            .probability
            .unwrap_or(if body.status.is_some() { 1.0 } else { 0.0 }),
        latency_ms: body.latency_ms,
        trips_breaker: body.trips_breaker,
    };
    fault.validate().map_err(|e| {
        let field = match e {
            lab_resilience::FaultError::Status(_) | lab_resilience::FaultError::Empty => "status",
            lab_resilience::FaultError::Probability => "probability",
            lab_resilience::FaultError::Latency => "latency_ms",
        };
        Problem::invalid_field(field, e.to_string())
    })?;
    let faults = active(&state).await.map_err(|e| redis_down(&e))?;
    let existing = faults.iter().find(|f| f.target == body.target);
    if existing.is_none() && faults.len() >= MAX_ACTIVE {
        return Err(Problem::typed(
            StatusCode::CONFLICT,
            "chaos-full",
            "Too many faults at once",
        )
        .detail(format!(
            "{MAX_ACTIVE} faults are active; remove one or wait for one to end"
        )));
    }
    let expires_at_ms = now_ms() + body.duration_s * 1_000;
    let record = FaultRecord {
        id: existing.map_or_else(Uuid::now_v7, |f| f.id),
        target: body.target.clone(),
        fault,
        // Re-applying extends: never shortens a fault someone else set longer.
        expires_at_ms: existing.map_or(expires_at_ms, |f| f.expires_at_ms.max(expires_at_ms)),
        expires_in_ms: 0,
    };
    store(&state, &record).await?;
    let mut conn = state.redis.conn();
    if let Some(old) = existing.filter(|f| f.id != record.id) {
        let _: Result<i64, _> = redis::cmd("HDEL")
            .arg(key(&state))
            .arg(old.id.to_string())
            .query_async(&mut conn)
            .await;
    }
    apply(&state, &record);
    let verb = if existing.is_some() {
        "extended"
    } else {
        "injected"
    };
    announce(
        &state,
        format!(
            "fault {verb} on {}: {} for {} s",
            record.target,
            describe(&record.fault),
            body.duration_s
        ),
        "warn",
    )
    .await;
    let mut record = record;
    record.expires_in_ms = record.expires_at_ms.saturating_sub(now_ms());
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Puts `fault` on `target` for `ttl` through the shared store (every replica applies it) and
/// on this replica at once; the circuit-breaker demo's "upstream failing" switch.
pub(crate) async fn set_shared(
    state: &AppState,
    target: &str,
    fault: HttpFault,
    ttl: Duration,
) -> Result<(), Problem> {
    fault
        .validate()
        .map_err(|e| Problem::invalid_field("fault", e.to_string()))?;
    let faults = active(state).await.map_err(|e| redis_down(&e))?;
    let existing = faults.iter().find(|f| f.target == target);
    let record = FaultRecord {
        id: existing.map_or_else(Uuid::now_v7, |f| f.id),
        target: target.to_owned(),
        fault,
        expires_at_ms: now_ms() + u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        expires_in_ms: 0,
    };
    store(state, &record).await?;
    apply(state, &record);
    announce(
        state,
        format!("fault injected on {target}: {}", describe(&record.fault)),
        "warn",
    )
    .await;
    Ok(())
}

/// Lifts `target`'s fault everywhere.
pub(crate) async fn clear_shared(state: &AppState, target: &str) -> Result<(), Problem> {
    let faults = active(state).await.map_err(|e| redis_down(&e))?;
    let mut conn = state.redis.conn();
    for fault in faults.iter().filter(|f| f.target == target) {
        let _: i64 = redis::cmd("HDEL")
            .arg(key(state))
            .arg(fault.id.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_down(&e))?;
    }
    state.proxy.clear_fault(target);
    announce(state, format!("fault on {target} removed"), "info").await;
    Ok(())
}

async fn store(state: &AppState, record: &FaultRecord) -> Result<(), Problem> {
    let mut conn = state.redis.conn();
    let json = serde_json::to_string(record).map_err(|_| Problem::internal())?;
    redis::cmd("HSET")
        .arg(key(state))
        .arg(record.id.to_string())
        .arg(json)
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| redis_down(&e))
}

/// Lifts a fault before it ends by itself.
#[utoipa::path(delete, path = "/api/chaos/faults/{id}", tag = "chaos", responses(
    (status = 204), (status = 404, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn delete_fault(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, Problem> {
    let faults = active(&state).await.map_err(|e| redis_down(&e))?;
    let Some(record) = faults.into_iter().find(|f| f.id == id) else {
        return Err(Problem::not_found(format!("no active fault {id}")));
    };
    let mut conn = state.redis.conn();
    let removed: i64 = redis::cmd("HDEL")
        .arg(key(&state))
        .arg(id.to_string())
        .query_async(&mut conn)
        .await
        .map_err(|e| redis_down(&e))?;
    state.proxy.clear_fault(&record.target);
    if removed == 1 {
        announce(
            &state,
            format!("fault on {} removed", record.target),
            "info",
        )
        .await;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn describe(fault: &HttpFault) -> String {
    let mut parts = Vec::new();
    if let Some(status) = fault.status {
        parts.push(format!(
            "{status} on {:.0} % of calls",
            fault.probability * 100.0
        ));
    }
    if fault.latency_ms > 0 {
        parts.push(format!("+{} ms", fault.latency_ms));
    }
    parts.join(", ")
}

fn apply(state: &AppState, record: &FaultRecord) {
    let left = Duration::from_millis(record.expires_at_ms.saturating_sub(now_ms()));
    if !left.is_zero() {
        let _ = state
            .proxy
            .set_fault(&record.target, record.fault.clone(), left);
    }
}

/// A console line and the new chaos snapshot, to every viewer.
async fn announce(state: &AppState, text: String, level: &str) {
    state.live.publish(LiveEvent::public(
        state.instance_id.clone(),
        LiveBody::Console(ConsoleLine {
            level: level.into(),
            text,
        }),
    ));
    let faults = active(state).await.unwrap_or_default();
    state.live.publish(LiveEvent::public(
        state.instance_id.clone(),
        LiveBody::Chaos(json!({ "faults": faults, "limits": limits() })),
    ));
}

/// Keeps this replica's proxy in step with the shared faults, and retires expired ones.
pub(crate) async fn reconcile(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
        let mut conn = state.redis.conn();
        let Ok(all) = redis::cmd("HGETALL")
            .arg(key(&state))
            .query_async::<HashMap<String, String>>(&mut conn)
            .await
        else {
            continue;
        };
        let now = now_ms();
        let records: Vec<FaultRecord> = all
            .values()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect();
        for target in targets(&state) {
            match records
                .iter()
                .find(|r| r.target == target && r.expires_at_ms > now)
            {
                Some(record) => {
                    let wanted = Duration::from_millis(record.expires_at_ms - now);
                    // Another replica may have changed or extended it.
                    let stale = state.proxy.fault(&target).is_none_or(|(fault, left)| {
                        fault != record.fault || left + Duration::from_secs(1) < wanted
                    });
                    if stale {
                        apply(&state, record);
                    }
                }
                None => {
                    if state.proxy.fault(&target).is_some() {
                        state.proxy.clear_fault(&target);
                    }
                }
            }
        }
        for record in records.iter().filter(|r| r.expires_at_ms <= now) {
            let removed: i64 = redis::cmd("HDEL")
                .arg(key(&state))
                .arg(record.id.to_string())
                .query_async(&mut conn)
                .await
                .unwrap_or(0);
            if removed == 1 {
                announce(
                    &state,
                    format!("fault on {} expired", record.target),
                    "info",
                )
                .await;
            }
        }
    }
}
