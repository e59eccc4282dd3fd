//! `/api/chaos`: every fault of the cluster in one list. HTTP-level faults on the BFF → service
//! edges are the part the BFF applies itself (an error status with a probability and/or added
//! latency on every replica of a service, for at most two minutes); TCP faults on the edges and
//! process faults (`layer: "tcp" | "process"`) are relayed to the apphost (`relay`), with the
//! caller's role. `GET /api/chaos` merges both (targets, edges, processes, faults with time
//! left, limits), `POST /api/chaos/faults` applies one, `DELETE /api/chaos/faults/{id}` lifts
//! one (a UUID is the BFF's own, a number the apphost's). Visitors' faults are capped in count
//! across layers.
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
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lab_contracts::live::{ConsoleLine, LiveBody, LiveEvent};
use lab_http::{Json, Problem};
use lab_resilience::HttpFault;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::relay::{self, Role};
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

/// Which part of the cluster applies a fault.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// The BFF, on its calls to a service (status, latency).
    #[default]
    Http,
    /// The apphost's proxy on an edge (latency, bandwidth, reset, blackhole, …).
    Tcp,
    /// The apphost's supervisor, on one process (pause, kill, restart).
    Process,
}

/// `POST /api/chaos/faults`. Today's HTTP body (no `layer`) keeps working.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFault {
    /// `http` (default), `tcp` or `process`.
    #[serde(default)]
    pub layer: Layer,
    /// http: a proxied service (`catalog`, …); tcp: a target (`postgres`, `catalog-1`, …);
    /// process: one process (`catalog-2`, `payments`, `postgres`, …).
    #[serde(default)]
    pub target: String,
    /// tcp: one edge (`catalog-1→postgres`) instead of a whole target.
    #[serde(default)]
    pub edge: Option<String>,
    /// tcp: the fault, `{"kind": "latency", "ms": 200, "jitter_ms": 50}`, `{"kind": "reset",
    /// "probability": 1}`, `{"kind": "blackhole"}`, …
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub fault: Option<Value>,
    /// process: `pause`, `kill` or `restart`.
    #[serde(default)]
    pub action: Option<String>,
    /// http: status of the failing share of calls (500–599); none for latency alone.
    #[serde(default)]
    pub status: Option<u16>,
    /// http: share of calls that fail (0–1; default 1 when a status is given).
    #[serde(default)]
    pub probability: Option<f64>,
    /// http: added to every call (0–10,000 ms).
    #[serde(default)]
    pub latency_ms: u64,
    /// Seconds until it ends by itself (1–120; up to 3,600 for tcp/process faults of an admin).
    pub duration_s: u64,
    /// http: whether the injected failures count against the breakers.
    #[serde(default)]
    pub trips_breaker: bool,
}

/// `GET /api/chaos`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChaosState {
    /// Services an HTTP fault can target.
    pub targets: Vec<String>,
    /// Every active fault of every layer (`layer`: `http`, `tcp`, `process`), with `target`,
    /// `expires_at_ms` and `expires_in_ms`.
    #[schema(value_type = Vec<Object>)]
    pub faults: Vec<Value>,
    /// The bounds a visitor's fault must keep.
    pub limits: Limits,
    /// The layers this BFF can apply: `http` alone without an apphost.
    pub layers: Vec<Layer>,
    /// The caller's role, which bounds what they may do.
    #[schema(value_type = String)]
    pub role: Role,
    /// The apphost's edges, processes (each with what the caller may do to it) and TCP targets;
    /// `null` without an apphost.
    #[schema(value_type = Option<Object>)]
    pub apphost: Option<Value>,
    /// Fault kinds that exist but this BFF cannot apply, shown as such rather than hidden.
    pub not_here: Vec<&'static str>,
    /// Why they are not here.
    pub not_here_reason: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Limits {
    pub max_duration_s: u64,
    pub max_active: usize,
    pub max_latency_ms: u64,
    /// Visitors' faults at once, across every layer.
    pub max_visitor_faults: usize,
}

pub(crate) fn now_ms() -> u64 {
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

/// Targets, edges, processes, every active fault and the limits.
#[utoipa::path(get, path = "/api/chaos", tag = "chaos", responses(
    (status = 200, body = ChaosState), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn get_chaos(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<ChaosState>, Problem> {
    let role = relay::role(&state, &headers).await;
    let own = active(&state).await.map_err(|e| redis_down(&e))?;
    let apphost = relay::apphost_state(&state).await;
    let (apphost, reason) = match apphost {
        Ok(Some(a)) => (Some(a), None),
        Ok(None) => (None, Some(relay::NO_APPHOST.to_owned())),
        // Configured but not answering: the HTTP faults still work; say why the rest is gone.
        Err(_) => (
            None,
            Some("the apphost (`lab up`) is configured but its chaos API is not answering: only HTTP faults for now".to_owned()),
        ),
    };
    let faults = merged(&own, apphost.as_ref());
    let layers = if apphost.is_some() {
        vec![Layer::Http, Layer::Tcp, Layer::Process]
    } else {
        vec![Layer::Http]
    };
    let not_here = if apphost.is_some() {
        Vec::new()
    } else {
        vec![
            "pause",
            "kill",
            "restart",
            "tcp-latency",
            "reset",
            "blackhole",
            "bandwidth",
        ]
    };
    Ok(Json(ChaosState {
        targets: targets(&state),
        faults,
        limits: limits(),
        layers,
        role,
        apphost: apphost.map(|a| relay::offer(&a, role)),
        not_here,
        not_here_reason: reason,
    }))
}

/// The BFF's HTTP faults and the apphost's, in one list shaped alike.
fn merged(own: &[FaultRecord], apphost: Option<&Value>) -> Vec<Value> {
    let mut out: Vec<Value> = own
        .iter()
        .filter_map(|f| serde_json::to_value(f).ok())
        .map(|mut v| {
            if let Some(obj) = v.as_object_mut() {
                obj.insert("layer".into(), json!("http"));
                obj.insert("requester".into(), json!("visitor"));
            }
            v
        })
        .collect();
    if let Some(apphost) = apphost {
        out.extend(relay::faults_of(apphost, now_ms()));
    }
    out
}

fn limits() -> Limits {
    Limits {
        max_duration_s: MAX_DURATION_S,
        max_active: MAX_ACTIVE,
        max_latency_ms: lab_resilience::fault::MAX_LATENCY.as_millis() as u64,
        max_visitor_faults: MAX_ACTIVE,
    }
}

/// Applies (or extends) a fault: HTTP on every replica of a service, or TCP/process relayed to
/// the apphost with the caller's role.
#[utoipa::path(post, path = "/api/chaos/faults", tag = "chaos", request_body = NewFault, responses(
    (status = 201, description = "the fault, as listed by GET /api/chaos"), (status = 422, body = lab_http::Problem),
    (status = 409, body = lab_http::Problem, description = "too many faults at once"),
    (status = 503, body = lab_http::Problem)))]
pub(crate) async fn post_fault(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<NewFault>,
) -> Result<Response, Problem> {
    let role = relay::role(&state, &headers).await;
    if body.layer != Layer::Http {
        return post_relayed(&state, body, role).await;
    }
    if body.edge.is_some() || body.fault.is_some() || body.action.is_some() {
        return Err(Problem::invalid_field(
            "layer",
            "`edge`, `fault` and `action` belong to `layer: \"tcp\"` or `\"process\"`",
        ));
    }
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
    if existing.is_none() && role == Role::Visitor {
        // The apphost's count is best effort: an apphost that does not answer holds none.
        let apphost = relay::apphost_state(&state).await.ok().flatten();
        check_cap(faults.len() + relay::visitor_faults(apphost.as_ref()))?;
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

/// 409 when visitors already hold `held` faults, the cap.
fn check_cap(held: usize) -> Result<(), Problem> {
    if held >= MAX_ACTIVE {
        return Err(Problem::typed(
            StatusCode::CONFLICT,
            "chaos-full",
            "Too many faults at once",
        )
        .detail(format!(
            "{MAX_ACTIVE} visitors' faults are active across every layer; remove one or wait for one to end"
        )));
    }
    Ok(())
}

/// A TCP or process fault, checked here as far as the BFF can (shape, duration, the cap) and
/// relayed; the apphost refuses what aims at nothing or what the role may not do (422).
async fn post_relayed(state: &AppState, body: NewFault, role: Role) -> Result<Response, Problem> {
    if body.status.is_some()
        || body.probability.is_some()
        || body.latency_ms != 0
        || body.trips_breaker
    {
        return Err(Problem::invalid_field(
            "layer",
            "`status`, `probability`, `latency_ms` and `trips_breaker` belong to `layer: \"http\"`",
        ));
    }
    let max = role.max_duration_s();
    if !(1..=max).contains(&body.duration_s) {
        return Err(Problem::invalid_field(
            "duration_s",
            format!("between 1 and {max} for a {role:?}").to_lowercase(),
        ));
    }
    let (scope, fault) = match body.layer {
        Layer::Tcp => {
            let scope = match (body.edge, body.target.is_empty()) {
                (Some(edge), true) => json!({ "type": "edge", "name": edge }),
                (None, false) => json!({ "type": "target", "name": body.target }),
                _ => {
                    return Err(Problem::invalid_field(
                        "target",
                        "a TCP fault names either a `target` or one `edge`",
                    ));
                }
            };
            let fault = body.fault.filter(Value::is_object).ok_or_else(|| {
                Problem::invalid_field("fault", "a TCP fault needs `fault: {\"kind\": …}`")
            })?;
            (scope, fault)
        }
        _ => {
            let action = body.action.unwrap_or_default();
            if !matches!(action.as_str(), "pause" | "kill" | "restart") {
                return Err(Problem::invalid_field(
                    "action",
                    "a process fault's action is `pause`, `kill` or `restart`",
                ));
            }
            if body.target.is_empty() {
                return Err(Problem::invalid_field(
                    "target",
                    "a process fault names one process",
                ));
            }
            (
                json!({ "type": "target", "name": body.target }),
                json!({ "kind": action }),
            )
        }
    };
    let apphost = relay::apphost_state(state)
        .await?
        .ok_or_else(relay::no_apphost)?;
    if role == Role::Visitor {
        let kind = fault["kind"].as_str().unwrap_or_default();
        // A pause or TCP kind already on the scope is extended, not added.
        let extends =
            kind != "kill" && kind != "restart" && relay::has_fault(Some(&apphost), &scope, kind);
        if !extends {
            let own = active(state).await.map_err(|e| redis_down(&e))?;
            check_cap(own.len() + relay::visitor_faults(Some(&apphost)))?;
        }
    }
    let applied = relay::apply(state, scope, fault, body.duration_s, role).await?;
    announce(
        state,
        format!(
            "{} fault {} on {} for {} s ({})",
            applied["layer"].as_str().unwrap_or("apphost"),
            applied["fault"]["kind"].as_str().unwrap_or("?"),
            applied["target"].as_str().unwrap_or("?"),
            body.duration_s,
            if role == Role::Admin {
                "admin"
            } else {
                "visitor"
            }
        ),
        "warn",
    )
    .await;
    Ok((StatusCode::CREATED, Json(applied)).into_response())
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

/// Lifts a fault before it ends by itself: a UUID is one of the BFF's HTTP faults, a number
/// one of the apphost's (relayed).
#[utoipa::path(delete, path = "/api/chaos/faults/{id}", tag = "chaos", responses(
    (status = 204), (status = 404, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn delete_fault(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<StatusCode, Problem> {
    if let Ok(number) = id.parse::<u64>() {
        if !relay::remove(&state, number).await? {
            return Err(Problem::not_found(format!("no active fault {id}")));
        }
        announce(&state, format!("fault {id} removed"), "info").await;
        return Ok(StatusCode::NO_CONTENT);
    }
    let Ok(id) = id.parse::<Uuid>() else {
        return Err(Problem::not_found(format!("no active fault {id}")));
    };
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
    let apphost = relay::apphost_state(state).await.ok().flatten();
    publish_snapshot(state, apphost.as_ref()).await;
}

/// Every fault of every layer, to every viewer.
pub(crate) async fn publish_snapshot(state: &AppState, apphost: Option<&Value>) {
    let own = active(state).await.unwrap_or_default();
    let processes = apphost.map(|a| a["processes"].clone());
    state.live.publish(LiveEvent::public(
        state.instance_id.clone(),
        LiveBody::Chaos(json!({
            "faults": merged(&own, apphost),
            "limits": limits(),
            "processes": processes,
        })),
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
