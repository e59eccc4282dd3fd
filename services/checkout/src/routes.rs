//! The checkout's HTTP API: one saga with its history and pending deadline, and the admin list
//! of sagas by state, stuck ones included.

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::get;
use lab_http::{Json, Path, Problem, Query};
use serde::Deserialize;
use uuid::Uuid;

use crate::queries::{self, SagaSummary, SagaView};
use crate::saga;
use lab_auth::{AdminGate, RequireAdmin};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    /// Who is an administrator (the operator's break-glass token; checkout takes no identity
    /// tokens yet); with no token configured nobody may list sagas.
    pub admin: AdminGate,
    /// The saga's timeouts, for the longest saga `GET /invariants` reports.
    pub timeouts: crate::saga::Timeouts,
}

impl FromRef<AppState> for AdminGate {
    fn from_ref(state: &AppState) -> Self {
        state.admin.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/sagas", get(list_sagas))
        .route("/sagas/{order_id}", get(get_saga))
        .route("/invariants", get(crate::invariants::get_invariants))
        .with_state(state)
}

/// A database failure: logged once here, answered as 503 (the database, not the request, is at fault).
pub(crate) fn db_problem(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable("postgres", lab_db::short_reason(&e))
}

/// The saga of an order: state, version, full history and pending deadline.
#[utoipa::path(get, path = "/sagas/{order_id}", tag = "checkout",
    params(("order_id" = Uuid, Path, description = "The order whose saga to show")),
    responses((status = 200, body = SagaView), (status = 404, body = Problem)))]
pub async fn get_saga(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> Result<Json<SagaView>, Problem> {
    queries::saga(&state.pool, order_id)
        .await
        .map_err(db_problem)?
        .map(Json)
        .ok_or_else(|| Problem::not_found(format!("no saga for order {order_id}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only sagas in this state (`Initiated`, …, `Cancelled`, `RequiresReview`).
    state: Option<String>,
    /// Only stuck sagas: not finished, and their deadline passed without firing.
    stuck: Option<bool>,
    /// 1–500, default 100.
    limit: Option<i64>,
}

/// Lists sagas by state, newest first (administrator only).
#[utoipa::path(get, path = "/sagas", tag = "checkout", params(ListQuery),
    security(("bearer" = [])),
    responses((status = 200, body = [SagaSummary]), (status = 401, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list_sagas(
    _admin: RequireAdmin,
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Vec<SagaSummary>>, Problem> {
    if let Some(s) = &query.state
        && saga::State::parse(s).is_none()
    {
        let known: Vec<&str> = saga::ALL_STATES.iter().map(|s| s.as_str()).collect();
        return Err(Problem::invalid_field(
            "state",
            format!("one of {}", known.join(", ")),
        ));
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Problem::invalid_field("limit", "between 1 and 500"));
    }
    let sagas = queries::list(
        &state.pool,
        query.state.as_deref(),
        query.stuck.unwrap_or(false),
        limit,
    )
    .await
    .map_err(db_problem)?;
    Ok(Json(sagas))
}
