//! The control API: a loopback HTTP server of the running apphost. `GET /processes` lists every
//! process (services and infrastructure) for `lab status`; `POST /processes/{name}/restart` and
//! `/kill` act on one service process. Chaos has one shape for every fault: `POST /chaos/faults`
//! takes `{scope, fault, ttl_s, requester}` where `fault.kind` is a TCP kind (applied by the
//! edge proxies) or `pause`/`kill`/`restart` (a process fault, see `faults`); `GET /chaos` lists
//! edges, processes and every fault with a `layer`; `DELETE /chaos/faults/{id}` removes either.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::faults::{Action, ProcessFaultError, ProcessFaultView, ProcessFaults, ProcessState};
use crate::supervisor::Control;
use crate::table::{Health, ProcessInfo, ProcessTable};

/// What the handlers share.
#[derive(Clone)]
pub struct ControlState {
    /// Every process.
    pub table: ProcessTable,
    /// Command channel of each service process, by name.
    pub commands: Arc<BTreeMap<String, mpsc::Sender<Control>>>,
    /// The fault proxies on every edge.
    pub chaos: lab_faultproxy::Chaos,
    /// Pause, kill and restart faults.
    pub processes: ProcessFaults,
}

/// Binds the control API's listener on a free loopback port (before the services start, so the
/// BFF can be told where it is).
pub async fn bind() -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(crate::ports::loopback(0)).await
}

/// Serves the control API on `listener` until `shutdown`.
pub fn serve(
    listener: tokio::net::TcpListener,
    state: ControlState,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let router = axum::Router::new()
        .route("/processes", get(list))
        .route("/processes/{name}/restart", post(restart))
        .route("/processes/{name}/kill", post(kill))
        .route("/chaos", get(chaos_state))
        .route("/chaos/faults", post(apply_fault))
        .route("/chaos/faults/{id}", axum::routing::delete(remove_fault))
        .with_state(state);
    tracker.spawn(async move {
        let server =
            axum::serve(listener, router).with_graceful_shutdown(shutdown.cancelled_owned());
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "control API stopped");
        }
    });
}

/// Every process, with infrastructure health probed now.
async fn list(State(state): State<ControlState>) -> Json<Vec<ProcessInfo>> {
    let mut rows = state.table.snapshot();
    for row in rows.iter_mut().filter(|r| r.kind == "infra") {
        let up = crate::infra::tcp(row.port).await.is_ok();
        row.health = if up { Health::Ready } else { Health::Down };
    }
    Json(rows)
}

/// One fault of either layer, tagged with it.
#[derive(Debug, serde::Serialize)]
#[serde(tag = "layer", rename_all = "snake_case")]
enum AnyFault {
    Tcp(lab_faultproxy::ActiveFault),
    Process(ProcessFaultView),
}

/// `GET /chaos`.
#[derive(Debug, serde::Serialize)]
struct ChaosView {
    /// Every edge with its counters.
    edges: Vec<lab_faultproxy::EdgeView>,
    /// Every process with its state.
    processes: Vec<ProcessState>,
    /// Every active fault, TCP then process, with its time left.
    faults: Vec<AnyFault>,
    /// The longest fault each requester may ask for, in seconds.
    max_ttl_s: BTreeMap<&'static str, u64>,
}

/// Every edge with its counters, every process with its state, and every active fault.
async fn chaos_state(State(state): State<ControlState>) -> Json<ChaosView> {
    let tcp = state.chaos.state();
    let mut faults: Vec<AnyFault> = tcp.faults.into_iter().map(AnyFault::Tcp).collect();
    faults.extend(state.processes.faults().into_iter().map(AnyFault::Process));
    let max_ttl_s = [
        ("visitor", lab_faultproxy::Requester::Visitor),
        ("admin", lab_faultproxy::Requester::Admin),
    ]
    .into_iter()
    .map(|(name, r)| (name, r.max_ttl().as_secs()))
    .collect();
    Json(ChaosView {
        edges: tcp.edges,
        processes: state.processes.processes(),
        faults,
        max_ttl_s,
    })
}

/// A fault to apply: where, what, for how long, and for whom (which bounds the duration).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFault {
    scope: lab_faultproxy::Scope,
    /// A TCP fault (`lab_faultproxy::Fault`) or a process action (`faults::Action`), by `kind`.
    fault: serde_json::Value,
    ttl_s: u64,
    #[serde(default = "visitor")]
    requester: lab_faultproxy::Requester,
}

fn visitor() -> lab_faultproxy::Requester {
    lab_faultproxy::Requester::Visitor
}

fn refused(detail: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        Json(serde_json::json!({ "title": "Fault refused", "status": 422, "detail": detail })),
    )
        .into_response()
}

/// Applies (or extends) a TCP or process fault; 422 with the reason when it is out of bounds,
/// not allowed to the requester, or aims at nothing.
async fn apply_fault(
    State(state): State<ControlState>,
    Json(body): Json<NewFault>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let ttl = std::time::Duration::from_secs(body.ttl_s);
    let kind = body
        .fault
        .get("kind")
        .and_then(|k| k.as_str())
        .unwrap_or("");
    if Action::is_process_kind(kind) {
        let action: Action = match serde_json::from_value(body.fault) {
            Ok(a) => a,
            Err(e) => return refused(format!("fault: {e}")),
        };
        return match state
            .processes
            .apply(body.scope, action, ttl, body.requester)
        {
            Ok(view) => (StatusCode::CREATED, Json(AnyFault::Process(view))).into_response(),
            Err(e) => refused(e.to_string()),
        };
    }
    let fault: lab_faultproxy::Fault = match serde_json::from_value(body.fault) {
        Ok(f) => f,
        Err(e) => return refused(format!("fault: {e}")),
    };
    match state.chaos.apply(body.scope, fault, ttl, body.requester) {
        Ok(active) => (StatusCode::CREATED, Json(AnyFault::Tcp(active))).into_response(),
        Err(e) => refused(e.to_string()),
    }
}

async fn remove_fault(
    State(state): State<ControlState>,
    Path(id): Path<lab_faultproxy::FaultId>,
) -> StatusCode {
    let removed = if state.processes.contains(id) {
        state
            .processes
            .remove(id)
            .map_err(|_: ProcessFaultError| ())
    } else {
        state.chaos.remove(id).map_err(|_| ())
    };
    match removed {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(()) => StatusCode::NOT_FOUND,
    }
}

async fn restart(state: State<ControlState>, name: Path<String>) -> StatusCode {
    send(state, name, Control::Restart).await
}

async fn kill(state: State<ControlState>, name: Path<String>) -> StatusCode {
    send(state, name, Control::Kill).await
}

async fn send(
    State(state): State<ControlState>,
    Path(name): Path<String>,
    command: Control,
) -> StatusCode {
    match state.commands.get(&name) {
        Some(tx) if tx.send(command).await.is_ok() => StatusCode::ACCEPTED,
        Some(_) => StatusCode::CONFLICT,
        None => StatusCode::NOT_FOUND,
    }
}
