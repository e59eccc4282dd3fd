//! `GET /invariants`: the payments side of a chaos run's verdict (ARCHITECTURE.md §8), read
//! from the payments and their event history.
//!
//! - No payment captured twice: per order, the captures that moved it (the `CapturePayment`
//!   command or a capture webhook with outcome `applied`) number at most one, and the provider
//!   reported at most one capture (distinct PayPal capture ids in `PAYMENT.CAPTURE.COMPLETED`,
//!   distinct Stripe intents in `payment_intent.succeeded`, whatever their outcome: a second
//!   capture at the provider is money taken twice even if we ignored its webhook).
//! - Refunded orders are listed so the BFF can check none of them is `Completed` in orders
//!   (payments does not know orders' final status).
//! - Never more captured than authorized.

use axum::extract::State;
use lab_http::{Json, Problem};
use lab_messaging::invariants::{MAX_IDS, MessagingInvariants};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::routes::AppState;

/// The payments service's checks.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PaymentsInvariants {
    /// Whether every check payments can judge alone holds.
    pub held: bool,
    /// No payment captured twice.
    pub no_double_capture: DoubleCaptures,
    /// Captured never more than authorized.
    pub captured_within_authorized: OffendingOrders,
    /// The orders refunded, for the BFF's "never refunded and completed" check (no verdict here).
    pub refunded: RefundedOrders,
    /// The outbox drains and no message is dead.
    pub messaging: MessagingInvariants,
}

/// Captures per order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DoubleCaptures {
    /// Whether no order was captured more than once.
    pub held: bool,
    /// Payments in state `captured` or `refunded`.
    pub captured: i64,
    /// Orders with more than one capture.
    pub violations: i64,
    /// Their ids, at most 20.
    pub order_ids: Vec<Uuid>,
}

/// A per-order check: how many orders break it, and which.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OffendingOrders {
    /// Whether no order breaks it.
    pub held: bool,
    /// How many orders break it.
    pub violations: i64,
    /// Their ids, at most 20.
    pub order_ids: Vec<Uuid>,
}

/// Refunded payments.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefundedOrders {
    /// How many payments were refunded.
    pub count: i64,
    /// Their order ids, newest first, at most 20.
    pub order_ids: Vec<Uuid>,
}

/// Refunded orders listed: all of them, for any realistic run (a refund follows only money
/// that arrived after its window), so the BFF can check every one against orders.
pub const REFUNDED_LISTED: i64 = 100;

/// Orders captured more than once, by our history or by the provider's.
const DOUBLE_CAPTURES: &str = "\
    SELECT order_id FROM payment_events WHERE order_id IS NOT NULL GROUP BY order_id \
    HAVING count(*) FILTER (WHERE outcome = 'applied' AND kind IN \
               ('CapturePayment', 'PAYMENT.CAPTURE.COMPLETED', 'payment_intent.succeeded')) > 1 \
        OR count(DISTINCT detail->'resource'->>'id') \
               FILTER (WHERE source = 'paypal' AND kind = 'PAYMENT.CAPTURE.COMPLETED') > 1 \
        OR count(DISTINCT detail->'data'->'object'->>'id') \
               FILTER (WHERE source = 'stripe' AND kind = 'payment_intent.succeeded') > 1 \
    ORDER BY order_id";

/// A database failure: logged once here, answered 503.
fn db_problem(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable("postgres", lab_db::short_reason(&e))
}

/// The payments service's invariants, judged now from its own tables.
#[utoipa::path(get, path = "/invariants", tag = "chaos",
    responses((status = 200, body = PaymentsInvariants), (status = 503, body = Problem)))]
pub async fn get_invariants(
    State(state): State<AppState>,
) -> Result<Json<PaymentsInvariants>, Problem> {
    let pool = &state.pool;
    let twice: Vec<Uuid> = sqlx::query_scalar(DOUBLE_CAPTURES)
        .fetch_all(pool)
        .await
        .map_err(db_problem)?;
    let captured: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments WHERE state IN ('captured', 'refunded')")
            .fetch_one(pool)
            .await
            .map_err(db_problem)?;
    let over: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM payments \
         WHERE captured_minor > coalesce(authorized_minor, amount_minor) ORDER BY order_id",
    )
    .fetch_all(pool)
    .await
    .map_err(db_problem)?;
    let refunded_count: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments WHERE state = 'refunded'")
            .fetch_one(pool)
            .await
            .map_err(db_problem)?;
    let refunded_ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT order_id FROM payments WHERE state = 'refunded' \
         ORDER BY updated_at DESC LIMIT $1",
    )
    .bind(REFUNDED_LISTED)
    .fetch_all(pool)
    .await
    .map_err(db_problem)?;
    let messaging = lab_messaging::invariants::for_route(pool).await?;
    let no_double_capture = DoubleCaptures {
        held: twice.is_empty(),
        captured,
        violations: i64::try_from(twice.len()).unwrap_or(i64::MAX),
        order_ids: twice.into_iter().take(MAX_IDS as usize).collect(),
    };
    let within = OffendingOrders {
        held: over.is_empty(),
        violations: i64::try_from(over.len()).unwrap_or(i64::MAX),
        order_ids: over.into_iter().take(MAX_IDS as usize).collect(),
    };
    Ok(Json(PaymentsInvariants {
        held: no_double_capture.held && within.held && messaging.held(),
        no_double_capture,
        captured_within_authorized: within,
        refunded: RefundedOrders {
            count: refunded_count,
            order_ids: refunded_ids,
        },
        messaging,
    }))
}
