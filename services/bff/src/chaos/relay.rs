//! The apphost's faults, relayed: TCP faults on every edge (`lab_faultproxy`) and process faults
//! (pause, kill, restart) live in the apphost that `lab up` runs; the BFF is told its control
//! API's address (`LAB_BFF__CHAOS__APPHOST_URL`) and relays the page's requests to it with the
//! caller's role — admin only when the request's bearer token verifies and carries the admin
//! role, otherwise visitor; the body cannot claim a role. Without an apphost (a cluster started
//! in-process by tests) only the BFF's own HTTP faults exist, and `GET /api/chaos` says so.
//!
//! The apphost's state changes by itself (faults expire, a killed process comes back), so the
//! leader replica polls it and pushes a `chaos` event to every viewer when it changed.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use lab_http::Problem;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::AppState;

/// The loopback control API answers in milliseconds; a slower answer means the apphost is gone
/// or stuck, and the page should say so rather than hang.
const APPHOST_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the apphost is, if there is one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ChaosSettings {
    /// The apphost's control API (`http://127.0.0.1:<port>`), passed by `lab up`; `None` when
    /// the BFF runs without one.
    pub apphost_url: Option<String>,
    /// How often the leader polls the apphost's chaos state for changes to push.
    pub apphost_poll_ms: u64,
}

impl Default for ChaosSettings {
    fn default() -> Self {
        Self {
            apphost_url: None,
            // Expiries and restarts show within a second, at one loopback request a second.
            apphost_poll_ms: 1_000,
        }
    }
}

/// Who asks, which bounds what they may do; never read from the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Visitor,
    Admin,
}

impl Role {
    /// The longest fault this role may ask for, as the apphost bounds it.
    pub fn max_duration_s(self) -> u64 {
        match self {
            Role::Visitor => 120,
            Role::Admin => 3_600,
        }
    }
}

/// Admin when the bearer token verifies and has the admin role; visitor otherwise (no token, an
/// invalid one, identity unreachable).
pub(crate) async fn role(state: &AppState, headers: &HeaderMap) -> Role {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let (Some(token), Some(verifier)) = (token, state.verifier.as_ref()) else {
        return Role::Visitor;
    };
    match verifier.verify(token).await {
        Ok(claims) if claims.roles.iter().any(|r| r == "admin") => Role::Admin,
        _ => Role::Visitor,
    }
}

fn base(state: &AppState) -> Option<&str> {
    state
        .settings
        .chaos
        .apphost_url
        .as_deref()
        .map(|u| u.trim_end_matches('/'))
}

fn unavailable(e: impl std::fmt::Display) -> Problem {
    Problem::unavailable(
        "apphost",
        format!("the apphost's chaos API did not answer: {e}"),
    )
}

/// The apphost's `GET /chaos` (edges, processes, faults), or `None` without an apphost.
pub(crate) async fn apphost_state(state: &AppState) -> Result<Option<Value>, Problem> {
    let Some(base) = base(state) else {
        return Ok(None);
    };
    let response = state
        .http
        .get(format!("{base}/chaos"))
        .timeout(APPHOST_TIMEOUT)
        .send()
        .await
        .map_err(unavailable)?;
    if !response.status().is_success() {
        return Err(unavailable(response.status()));
    }
    response.json().await.map(Some).map_err(unavailable)
}

/// The apphost's faults shaped like the BFF's own: `target` (the scope's name) and
/// `expires_at_ms` (so the page counts every fault down the same way) added.
pub(crate) fn faults_of(apphost: &Value, now_ms: u64) -> Vec<Value> {
    apphost["faults"]
        .as_array()
        .map(|faults| {
            faults
                .iter()
                .map(|f| {
                    let mut f = f.clone();
                    let left = f["expires_in_ms"].as_u64().unwrap_or(0);
                    let target = f["scope"]["name"].clone();
                    if let Some(obj) = f.as_object_mut() {
                        obj.insert("target".into(), target);
                        obj.insert("expires_at_ms".into(), json!(now_ms + left));
                    }
                    f
                })
                .collect()
        })
        .unwrap_or_default()
}

/// How many of the apphost's faults a visitor applied.
pub(crate) fn visitor_faults(apphost: Option<&Value>) -> usize {
    apphost
        .and_then(|a| a["faults"].as_array())
        .map_or(0, |faults| {
            faults
                .iter()
                .filter(|f| f["requester"] == "visitor")
                .count()
        })
}

/// Whether the apphost already has a fault of `kind` on `scope` (re-applying it extends it, so
/// it does not count against the cap).
pub(crate) fn has_fault(apphost: Option<&Value>, scope: &Value, kind: &str) -> bool {
    apphost
        .and_then(|a| a["faults"].as_array())
        .is_some_and(|faults| {
            faults
                .iter()
                .any(|f| &f["scope"] == scope && f["fault"]["kind"] == kind)
        })
}

/// Relays a TCP or process fault to the apphost with `role` as its requester.
pub(crate) async fn apply(
    state: &AppState,
    scope: Value,
    fault: Value,
    duration_s: u64,
    role: Role,
) -> Result<Value, Problem> {
    let Some(base) = base(state) else {
        return Err(no_apphost());
    };
    let response = state
        .http
        .post(format!("{base}/chaos/faults"))
        .timeout(APPHOST_TIMEOUT)
        .json(&json!({ "scope": scope, "fault": fault, "ttl_s": duration_s, "requester": role }))
        .send()
        .await
        .map_err(unavailable)?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    match status {
        StatusCode::CREATED => Ok(
            faults_of(&json!({ "faults": [body] }), super::faults::now_ms())
                .into_iter()
                .next()
                .unwrap_or(Value::Null),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => Err(Problem::invalid_field(
            "fault",
            body["detail"]
                .as_str()
                .unwrap_or("the apphost refused the fault")
                .to_owned(),
        )),
        other => Err(unavailable(other)),
    }
}

/// Relays a removal; `Ok(false)` when the apphost has no such fault.
pub(crate) async fn remove(state: &AppState, id: u64) -> Result<bool, Problem> {
    let Some(base) = base(state) else {
        return Ok(false);
    };
    let response = state
        .http
        .delete(format!("{base}/chaos/faults/{id}"))
        .timeout(APPHOST_TIMEOUT)
        .send()
        .await
        .map_err(unavailable)?;
    match response.status() {
        StatusCode::NO_CONTENT => Ok(true),
        StatusCode::NOT_FOUND => Ok(false),
        other => Err(unavailable(other)),
    }
}

/// The TCP kinds the apphost's proxies apply, as `fault.kind`.
pub const TCP_KINDS: [&str; 7] = [
    "latency",
    "bandwidth",
    "reset",
    "blackhole",
    "refuse",
    "slow_close",
    "cut_after",
];

/// Why `role` may not apply `action` to `process` (a row of the apphost's `processes`), or
/// `None` when it may. The apphost enforces the same rules; this lets the page show each
/// refused action disabled with its reason instead of hiding it.
fn refusal(process: &Value, action: &str, role: Role) -> Option<String> {
    let name = process["name"].as_str().unwrap_or("?");
    let infra = process["kind"] == "infra";
    if infra && process["owned"] != true {
        return Some(format!(
            "{name} is an existing server, not one `lab up` started"
        ));
    }
    if infra && role == Role::Visitor && action != "restart" {
        return Some(format!(
            "visitors may not {action} infrastructure: every service depends on {name}; the admin role may"
        ));
    }
    if name == "openbao" && action != "pause" {
        return Some("a dev OpenBao forgets every lease and key when it restarts".into());
    }
    None
}

/// What the page offers of the apphost: its edges and TCP targets with the TCP kinds, and every
/// process with, per action, why the caller may not (or `null`).
pub(crate) fn offer(apphost: &Value, role: Role) -> Value {
    let edges: Vec<Value> = apphost["edges"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| json!({ "name": e["name"], "targets": e["targets"] }))
                .collect()
        })
        .unwrap_or_default();
    let mut tcp_targets: Vec<String> = edges
        .iter()
        .filter_map(|e| e["targets"].as_array())
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    tcp_targets.sort();
    tcp_targets.dedup();
    let processes: Vec<Value> = apphost["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let mut p = p.clone();
                    let actions: serde_json::Map<String, Value> = ["pause", "kill", "restart"]
                        .into_iter()
                        .map(|a| (a.to_owned(), json!(refusal(&p, a, role))))
                        .collect();
                    if let Some(obj) = p.as_object_mut() {
                        obj.insert("refused".into(), Value::Object(actions));
                    }
                    p
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "edges": edges,
        "tcp_targets": tcp_targets,
        "tcp_kinds": TCP_KINDS,
        "processes": processes,
        "max_duration_s": role.max_duration_s(),
    })
}

/// The 422 for a TCP or process fault asked of a BFF without an apphost.
pub(crate) fn no_apphost() -> Problem {
    Problem::invalid_field("layer", NO_APPHOST.to_owned())
}

/// Why only HTTP faults are offered.
pub(crate) const NO_APPHOST: &str = "this BFF runs without an apphost (`lab up`), so only HTTP \
faults are available here: TCP faults on the edges and process faults need the apphost's fault \
proxies and supervisor";

/// What changes in the apphost's state that viewers should see: the faults (ids, status, the
/// restart's time) and the processes' states; not the edges' counters, which move all the time.
fn fingerprint(apphost: &Value) -> String {
    let faults: Vec<Value> = apphost["faults"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| json!([f["id"], f["status"], f["restart_ms"], f["requester"]]))
                .collect()
        })
        .unwrap_or_default();
    let processes: Vec<Value> = apphost["processes"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| json!([p["name"], p["state"], p["pid"]]))
                .collect()
        })
        .unwrap_or_default();
    json!([faults, processes]).to_string()
}

/// On the leader: polls the apphost and pushes the chaos snapshot to every viewer when it
/// changed, until `shutdown`.
pub(crate) async fn watch(
    state: AppState,
    leadership: crate::live::Leadership,
    shutdown: CancellationToken,
) {
    if base(&state).is_none() {
        return;
    }
    let period = Duration::from_millis(state.settings.chaos.apphost_poll_ms.max(100));
    let mut last = String::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        if !leadership.is_leader() {
            // Whoever leads next pushes its first look in full.
            last.clear();
            continue;
        }
        let Ok(Some(apphost)) = apphost_state(&state).await else {
            continue;
        };
        let now = fingerprint(&apphost);
        if now != last {
            last = now;
            super::faults::publish_snapshot(&state, Some(&apphost)).await;
        }
    }
}
