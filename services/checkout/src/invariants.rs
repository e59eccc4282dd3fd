//! `GET /invariants`: checkout's side of a chaos run's verdict (ARCHITECTURE.md §8), read from
//! the saga tables: sagas by state, and no saga stuck. A saga is stuck when it is not terminal
//! and either waits on nothing (no pending deadline) or its deadline passed more than
//! [`GRACE_MS`] ago (the poller should have fired it). A saga waiting on a deadline that has not
//! passed is in flight, not stuck. (The admin list's `stuck` flag has no grace: an operator
//! wants to see a late deadline at once; a verdict must not flap on one the poller is about to
//! fire.)
//!
//! Also reported: the longest a saga can take under this replica's timeouts, which the BFF
//! hands to orders to judge its pending orders by.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use lab_http::{Json, Problem};
use lab_messaging::invariants::{MAX_IDS, MessagingInvariants};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::routes::{AppState, db_problem};
use crate::saga::{ALL_STATES, MAX_COMMIT_RETRIES, State as SagaState, Timeouts};

/// How late a deadline may fire before its saga counts as stuck: the poller ticks every 250 ms
/// and a busy batch or a database reconnect takes seconds; 30 s is past any of those.
pub const GRACE_MS: u64 = 30_000;

/// In-flight sagas listed for the BFF's cross-check with orders.
pub const IN_FLIGHT_LISTED: i64 = 100;

/// Checkout's checks.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckoutInvariants {
    /// Whether every check holds.
    pub held: bool,
    /// Sagas per state; states with none are left out.
    pub by_state: BTreeMap<String, i64>,
    /// No saga is stuck.
    pub no_stuck_sagas: StuckSagas,
    /// The longest a saga can run under these timeouts (every step to its deadline, every
    /// commit re-issued), in milliseconds: an order pending longer is overdue.
    pub longest_saga_ms: u64,
    /// Sagas in flight that have not moved for [`GRACE_MS`], oldest first, at most 100: the BFF
    /// checks none of their orders is terminal in orders (a terminal order's saga finished first).
    pub in_flight_order_ids: Vec<Uuid>,
    /// The outbox drains and no message is dead.
    pub messaging: MessagingInvariants,
}

/// Non-terminal sagas that nothing will move.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StuckSagas {
    /// Whether none is stuck.
    pub held: bool,
    /// Sagas not yet terminal, stuck or not.
    pub in_flight: i64,
    /// Non-terminal sagas with no pending deadline.
    pub without_deadline: i64,
    /// Non-terminal sagas whose deadline passed more than `grace_ms` ago.
    pub deadline_overdue: i64,
    /// The grace period judged by, in milliseconds.
    pub grace_ms: u64,
    /// The stuck sagas' order ids, oldest first, at most 20.
    pub order_ids: Vec<Uuid>,
}

/// The longest path through the saga under `t`.
pub fn longest_saga(t: &Timeouts) -> Duration {
    t.reserve + t.session + t.payment + t.capture + t.commit * (u32::from(MAX_COMMIT_RETRIES) + 1)
}

/// Checkout's invariants, judged now from its own tables.
#[utoipa::path(get, path = "/invariants", tag = "chaos",
    responses((status = 200, body = CheckoutInvariants), (status = 503, body = Problem)))]
pub async fn get_invariants(
    State(state): State<AppState>,
) -> Result<Json<CheckoutInvariants>, Problem> {
    let pool = &state.pool;
    let terminal: Vec<&str> = ALL_STATES
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(SagaState::as_str)
        .collect();
    let by_state: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM sagas GROUP BY state")
            .fetch_all(pool)
            .await
            .map_err(db_problem)?;
    let grace_secs = GRACE_MS as f64 / 1000.0;
    let (in_flight, without_deadline, deadline_overdue): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE d.order_id IS NULL), \
                count(*) FILTER (WHERE d.due_at < now() - make_interval(secs => $2)) \
         FROM sagas s LEFT JOIN saga_deadlines d ON d.order_id = s.order_id \
         WHERE s.state <> ALL($1)",
    )
    .bind(&terminal)
    .bind(grace_secs)
    .fetch_one(pool)
    .await
    .map_err(db_problem)?;
    let order_ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT s.order_id FROM sagas s LEFT JOIN saga_deadlines d ON d.order_id = s.order_id \
         WHERE s.state <> ALL($1) \
           AND (d.order_id IS NULL OR d.due_at < now() - make_interval(secs => $2)) \
         ORDER BY s.created_at LIMIT $3",
    )
    .bind(&terminal)
    .bind(grace_secs)
    .bind(MAX_IDS)
    .fetch_all(pool)
    .await
    .map_err(db_problem)?;
    let in_flight_order_ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM sagas \
         WHERE state <> ALL($1) AND updated_at < now() - make_interval(secs => $2) \
         ORDER BY updated_at LIMIT $3",
    )
    .bind(&terminal)
    .bind(grace_secs)
    .bind(IN_FLIGHT_LISTED)
    .fetch_all(pool)
    .await
    .map_err(db_problem)?;
    let messaging = lab_messaging::invariants::for_route(pool).await?;
    let stuck = StuckSagas {
        held: without_deadline == 0 && deadline_overdue == 0,
        in_flight,
        without_deadline,
        deadline_overdue,
        grace_ms: GRACE_MS,
        order_ids,
    };
    Ok(Json(CheckoutInvariants {
        held: stuck.held && messaging.held(),
        by_state: by_state.into_iter().collect(),
        no_stuck_sagas: stuck,
        longest_saga_ms: u64::try_from(longest_saga(&state.timeouts).as_millis())
            .unwrap_or(u64::MAX),
        in_flight_order_ids,
        messaging,
    }))
}
