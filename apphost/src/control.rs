//! The control API: a loopback HTTP server of the running apphost. `GET /processes` lists every
//! process (services and infrastructure) for `lab status`; `POST /processes/{name}/restart` and
//! `/kill` act on one service process. Chaos (pause, kill, restart on a schedule, with expiry)
//! plugs in here: it needs exactly these per-process command channels and the table.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
}

/// Binds the control API on a free loopback port and serves it until `shutdown`.
pub async fn serve(
    state: ControlState,
    shutdown: CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(crate::ports::loopback(0)).await?;
    let addr = listener.local_addr()?;
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
    Ok(addr)
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

/// Every edge with its counters, and every active fault with its time left.
async fn chaos_state(State(state): State<ControlState>) -> Json<lab_faultproxy::ChaosState> {
    Json(state.chaos.state())
}

/// A fault to apply: where, what, for how long, and for whom (which bounds the duration).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewFault {
    scope: lab_faultproxy::Scope,
    fault: lab_faultproxy::Fault,
    ttl_s: u64,
    #[serde(default = "visitor")]
    requester: lab_faultproxy::Requester,
}

fn visitor() -> lab_faultproxy::Requester {
    lab_faultproxy::Requester::Visitor
}

/// Applies (or extends) a TCP fault; 422 with the reason when it is out of bounds or aims at
/// nothing.
async fn apply_fault(
    State(state): State<ControlState>,
    Json(body): Json<NewFault>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.chaos.apply(
        body.scope,
        body.fault,
        std::time::Duration::from_secs(body.ttl_s),
        body.requester,
    ) {
        Ok(active) => (StatusCode::CREATED, Json(active)).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "title": "Fault refused", "status": 422, "detail": e.to_string() })),
        )
            .into_response(),
    }
}

async fn remove_fault(
    State(state): State<ControlState>,
    Path(id): Path<lab_faultproxy::FaultId>,
) -> StatusCode {
    match state.chaos.remove(id) {
        Ok(()) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::NOT_FOUND,
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
