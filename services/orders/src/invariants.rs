//! `GET /invariants`: the orders side of a chaos run's verdict (ARCHITECTURE.md §8), read from
//! orders' own tables: orders by status, every order terminal or within its deadline, one claim
//! per key, and the messaging checks.
//!
//! For the BFF's cross-checks with payments and checkout, `statuses_of` asks the status of
//! given orders (refunded ones: none may be `Completed`; sagas in flight: none may be terminal).
//!
//! Orders does not know the saga's timeouts (checkout owns them), so the deadline is a query
//! parameter: the BFF passes checkout's longest saga path plus a grace period; called bare, the
//! route uses [`DEFAULT_DEADLINE_MS`], the longest path under checkout's default timeouts.

use std::collections::BTreeMap;

use axum::extract::State;
use lab_http::{Json, Problem, Query};
use lab_messaging::invariants::{MAX_IDS, MessagingInvariants};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::routes::{AppState, db_problem};

/// Checkout's default timeouts chain to at most 22 min (reserve 1 + session 1 + payment 15 +
/// capture 1 + commit 1 and three re-issues); 25 min leaves room for the last event to arrive.
pub const DEFAULT_DEADLINE_MS: u64 = 25 * 60 * 1000;

/// A deadline past a year is a mistake, not a saga.
const MAX_DEADLINE_MS: u64 = 365 * 24 * 3600 * 1000;

/// Ids `statuses_of` may name at once: what the BFF's cross-checks send (payments' refunded
/// orders and checkout's sagas in flight, each bounded at 100), and a URL of ~7 KB.
pub const MAX_STATUSES_OF: usize = 200;

/// The deadline to judge pending orders by, and orders whose status the caller wants.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct InvariantsQuery {
    /// How long after placement an order may still be `Pending`, in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Comma-separated order ids (at most 200) to answer the status of in `statuses_of`.
    pub statuses_of: Option<String>,
}

/// The orders service's checks.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrdersInvariants {
    /// Whether every check holds.
    pub held: bool,
    /// Orders per status (`Pending`, `Completed`, …); statuses with none are left out.
    pub by_status: BTreeMap<String, i64>,
    /// Every order is terminal or still within its deadline.
    pub terminal_or_within_deadline: OverdueOrders,
    /// One claim per key, and no two orders for one claim.
    pub one_claim_per_key: OneClaimPerKey,
    /// The outbox drains and no message is dead.
    pub messaging: MessagingInvariants,
    /// The status of each order named in the query's `statuses_of` that exists.
    pub statuses_of: BTreeMap<Uuid, String>,
}

/// Pending orders past their deadline.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OverdueOrders {
    /// Whether no order is overdue.
    pub held: bool,
    /// The deadline judged by, in milliseconds after placement.
    pub deadline_ms: u64,
    /// Orders still `Pending`, overdue or not.
    pub pending: i64,
    /// Age of the oldest pending order in milliseconds; 0 when none.
    pub oldest_pending_age_ms: u64,
    /// Pending orders placed longer than `deadline_ms` ago.
    pub overdue: i64,
    /// The oldest of them, at most 20.
    pub order_ids: Vec<Uuid>,
}

/// Claims and the orders they created.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OneClaimPerKey {
    /// Whether every key has one claim and every claim at most one order.
    pub held: bool,
    /// Claims held (live or expired).
    pub claims: i64,
    /// Keys (scope, key) with more than one claim row.
    pub keys_claimed_twice: i64,
    /// Claims that created more than one order.
    pub claims_with_two_orders: i64,
    /// Those claims' ids, at most 20.
    pub claim_ids: Vec<Uuid>,
}

/// The orders service's invariants, judged now from its own tables.
#[utoipa::path(get, path = "/invariants", tag = "chaos", params(InvariantsQuery),
    responses((status = 200, body = OrdersInvariants), (status = 400, body = Problem),
        (status = 503, body = Problem)))]
pub async fn get_invariants(
    State(state): State<AppState>,
    Query(query): Query<InvariantsQuery>,
) -> Result<Json<OrdersInvariants>, Problem> {
    let deadline_ms = query.deadline_ms.unwrap_or(DEFAULT_DEADLINE_MS);
    // Postgres intervals hold microseconds in an i64: ~292,000 years, far past any real deadline.
    if deadline_ms > MAX_DEADLINE_MS {
        return Err(Problem::invalid_field("deadline_ms", "at most a year"));
    }
    let deadline_secs = deadline_ms as f64 / 1000.0;
    let asked = parse_ids(query.statuses_of.as_deref())?;
    let pool = &state.pool;
    let statuses_of: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM orders WHERE id = ANY($1)")
            .bind(&asked)
            .fetch_all(pool)
            .await
            .map_err(db_problem)?;
    let by_status: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM orders GROUP BY status")
            .fetch_all(pool)
            .await
            .map_err(db_problem)?;
    let (pending, oldest_secs, overdue): (i64, Option<f64>, i64) = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(placed_at))::float8, \
                count(*) FILTER (WHERE placed_at < now() - make_interval(secs => $1)) \
         FROM orders WHERE status = 'Pending'",
    )
    .bind(deadline_secs)
    .fetch_one(pool)
    .await
    .map_err(db_problem)?;
    let overdue_ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM orders \
         WHERE status = 'Pending' AND placed_at < now() - make_interval(secs => $1) \
         ORDER BY placed_at LIMIT $2",
    )
    .bind(deadline_secs)
    .bind(MAX_IDS)
    .fetch_all(pool)
    .await
    .map_err(db_problem)?;
    // The primary key and UNIQUE constraints make both impossible today; counted anyway, so a
    // migration that loosens them cannot break the guarantee silently.
    let (claims, keys_claimed_twice): (i64, i64) = sqlx::query_as(
        "SELECT count(*), \
                (SELECT count(*) FROM (SELECT 1 FROM claims GROUP BY scope, key \
                                       HAVING count(*) > 1) k) \
         FROM claims",
    )
    .fetch_one(pool)
    .await
    .map_err(db_problem)?;
    let twice: Vec<Uuid> = sqlx::query_scalar(
        "SELECT claim_id FROM orders GROUP BY claim_id HAVING count(*) > 1 ORDER BY claim_id",
    )
    .fetch_all(pool)
    .await
    .map_err(db_problem)?;
    let messaging = lab_messaging::invariants::for_route(pool).await?;
    let deadline = OverdueOrders {
        held: overdue == 0,
        deadline_ms,
        pending,
        oldest_pending_age_ms: (oldest_secs.unwrap_or(0.0).max(0.0) * 1000.0) as u64,
        overdue,
        order_ids: overdue_ids,
    };
    let claims_with_two_orders = i64::try_from(twice.len()).unwrap_or(i64::MAX);
    let one_claim = OneClaimPerKey {
        held: keys_claimed_twice == 0 && claims_with_two_orders == 0,
        claims,
        keys_claimed_twice,
        claims_with_two_orders,
        claim_ids: twice.into_iter().take(MAX_IDS as usize).collect(),
    };
    Ok(Json(OrdersInvariants {
        held: deadline.held && one_claim.held && messaging.held(),
        by_status: by_status.into_iter().collect(),
        terminal_or_within_deadline: deadline,
        one_claim_per_key: one_claim,
        messaging,
        statuses_of: statuses_of.into_iter().collect(),
    }))
}

/// The ids of `statuses_of`: comma-separated UUIDs, at most [`MAX_STATUSES_OF`].
fn parse_ids(list: Option<&str>) -> Result<Vec<Uuid>, Problem> {
    let ids = list
        .into_iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(|id| {
            Uuid::parse_str(id)
                .map_err(|_| Problem::invalid_field("statuses_of", format!("{id:?} is not a UUID")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ids.len() > MAX_STATUSES_OF {
        return Err(Problem::invalid_field(
            "statuses_of",
            format!("at most {MAX_STATUSES_OF} ids"),
        ));
    }
    Ok(ids)
}
