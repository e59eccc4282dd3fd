//! Read models of the saga tables: one saga with its history and pending deadline, and the admin
//! list by state that shows which sagas are stuck.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// A saga as `GET /sagas/{order_id}` shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SagaView {
    pub order_id: Uuid,
    /// `Initiated`, `StockReserved`, …, `Completed`, `Rejected`, `Cancelled`, `RequiresReview`.
    pub state: String,
    /// Bumped by every transition.
    pub version: i64,
    /// Whether the saga has finished (nothing more will change but late refunds).
    pub terminal: bool,
    pub total_minor: i64,
    pub currency: String,
    pub provider: String,
    /// A refund was issued (late money, or an amount mismatch).
    pub refund_issued: bool,
    /// How many times committing the stock was retried.
    pub commit_retries: i16,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What the saga is waiting for and until when; none once terminal.
    pub deadline: Option<Deadline>,
    /// Every event it saw, in order, applied or ignored.
    pub history: Vec<Transition>,
}

/// A pending deadline.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Deadline {
    /// The state it was set for; when it passes, that state's timeout applies.
    pub state: String,
    pub due_at: DateTime<Utc>,
    /// Already due but not fired (the orchestrator is down, or behind).
    pub overdue: bool,
}

/// One row of a saga's history.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, sqlx::FromRow)]
pub struct Transition {
    pub seq: i32,
    /// None for the step that started the saga.
    pub from: Option<String>,
    pub to: String,
    pub event: String,
    /// The event's data (amount, reason, the state a timeout was for).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The message that caused it.
    pub message_id: Uuid,
    /// Commands issued on this step.
    pub commands: Vec<String>,
    /// Why it changed nothing, when it did not.
    pub ignored: Option<String>,
    pub at: DateTime<Utc>,
}

type SagaRow = (
    Uuid,
    String,
    i64,
    i64,
    String,
    String,
    bool,
    i16,
    DateTime<Utc>,
    DateTime<Utc>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<bool>,
);

/// The columns of [`SagaRow`], from `sagas s LEFT JOIN saga_deadlines d`; a macro so queries
/// stay whole literals (`concat!`), never formatted strings.
macro_rules! saga_select {
    () => {
        "SELECT s.order_id, s.state, s.version, s.total_minor, s.currency, s.provider, \
                s.refund_issued, s.commit_retries, s.created_at, s.updated_at, \
                d.state, d.due_at, d.due_at <= now() \
         FROM sagas s LEFT JOIN saga_deadlines d USING (order_id) "
    };
}

fn view(row: SagaRow, history: Vec<Transition>) -> SagaView {
    let (order_id, state, version, total_minor, currency, provider, refund_issued) =
        (row.0, row.1, row.2, row.3, row.4, row.5, row.6);
    let terminal = crate::saga::State::parse(&state).is_some_and(|s| s.is_terminal());
    let deadline = match (row.10, row.11) {
        (Some(state), Some(due_at)) => Some(Deadline {
            state,
            due_at,
            overdue: row.12.unwrap_or(false),
        }),
        _ => None,
    };
    SagaView {
        order_id,
        state,
        version,
        terminal,
        total_minor,
        currency,
        provider,
        refund_issued,
        commit_retries: row.7,
        created_at: row.8,
        updated_at: row.9,
        deadline,
        history,
    }
}

/// The saga of `order_id` with its whole history, if there is one.
pub async fn saga(pool: &PgPool, order_id: Uuid) -> Result<Option<SagaView>, sqlx::Error> {
    let row: Option<SagaRow> = sqlx::query_as(concat!(saga_select!(), "WHERE s.order_id = $1"))
        .bind(order_id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let history: Vec<Transition> = sqlx::query_as(
        "SELECT seq, from_state AS \"from\", to_state AS \"to\", event, detail, message_id, \
                commands, ignored, at \
         FROM saga_transitions WHERE order_id = $1 ORDER BY seq",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?;
    Ok(Some(view(row, history)))
}

/// A saga in the admin list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SagaSummary {
    pub order_id: Uuid,
    pub state: String,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
    pub deadline: Option<Deadline>,
    /// Not finished, and its deadline has passed without firing (or it has none).
    pub stuck: bool,
}

/// Sagas in `state` (any state when `None`), only the stuck ones when `stuck_only`, newest first.
pub async fn list(
    pool: &PgPool,
    state: Option<&str>,
    stuck_only: bool,
    limit: i64,
) -> Result<Vec<SagaSummary>, sqlx::Error> {
    let terminal: Vec<&str> = crate::saga::ALL_STATES
        .into_iter()
        .filter(|s| s.is_terminal())
        .map(crate::saga::State::as_str)
        .collect();
    let rows: Vec<SagaRow> = sqlx::query_as(concat!(
        saga_select!(),
        "WHERE ($1::text IS NULL OR s.state = $1) \
           AND (NOT $2 OR (s.state <> ALL($3) AND (d.due_at IS NULL OR d.due_at <= now()))) \
         ORDER BY s.updated_at DESC LIMIT $4"
    ))
    .bind(state)
    .bind(stuck_only)
    .bind(&terminal)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let v = view(row, Vec::new());
            let stuck = !v.terminal && v.deadline.as_ref().is_none_or(|d| d.overdue);
            SagaSummary {
                order_id: v.order_id,
                state: v.state,
                version: v.version,
                updated_at: v.updated_at,
                deadline: v.deadline,
                stuck,
            }
        })
        .collect())
}
