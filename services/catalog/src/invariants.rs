//! `GET /invariants`: the catalog's side of a chaos run's verdict (ARCHITECTURE.md §8), read
//! from its own tables, each check with its numbers and the offending product ids.
//!
//! What "stock is conserved" means here, exactly: `inventory.received` counts every unit ever
//! put into stock (the initial quantity, each restock or correction through
//! `PUT /products/{id}/inventory`, each demo reset), and every unit received is in exactly one
//! place, so per product `received = on_hand + reserved + sold`, and no count is negative.
//! Units move between places only through reservations, so the counters must also agree with
//! the reservation rows: `reserved` is the sum of the product's reservations still `reserved`,
//! and `sold` the sum of those `committed` (a `released` one gave its units back to on hand).
//! The table's CHECK constraints already refuse a violation; this check is what proves it
//! after the fact, and what catches a counter that moved without its reservation row.

use axum::extract::State;
use lab_http::{Json, Problem};
use lab_messaging::invariants::{MAX_IDS, MessagingInvariants};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::routes::{AppState, db_problem};

/// The catalog's checks.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CatalogInvariants {
    /// Whether every check holds.
    pub held: bool,
    /// `received = on_hand + reserved + sold` for every product, and in total.
    pub stock_conserved: StockConserved,
    /// No stock count below zero.
    pub stock_non_negative: OffendingProducts,
    /// `reserved` and `sold` equal the sums of the product's reservation rows.
    pub reservations_match_inventory: OffendingProducts,
    /// The outbox drains and no message is dead.
    pub messaging: MessagingInvariants,
}

/// Stock conservation with the totals it was judged on.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockConserved {
    /// Whether it holds for every product.
    pub held: bool,
    /// Products with an inventory row.
    pub products: i64,
    /// Units ever received, over every product.
    pub received: i64,
    /// Units on hand, over every product.
    pub on_hand: i64,
    /// Units reserved, over every product.
    pub reserved: i64,
    /// Units sold, over every product.
    pub sold: i64,
    /// Products whose own counts do not add up.
    pub violations: i64,
    /// Their ids, at most 20.
    pub product_ids: Vec<Uuid>,
}

/// A per-product check: how many products break it, and which.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OffendingProducts {
    /// Whether no product breaks it.
    pub held: bool,
    /// How many products break it.
    pub violations: i64,
    /// Their ids, at most 20.
    pub product_ids: Vec<Uuid>,
}

/// Every product's counters beside what its reservation rows say, one row per product.
const PER_PRODUCT: &str = "\
    WITH r AS ( \
        SELECT product_id, \
               coalesce(sum(quantity) FILTER (WHERE state = 'reserved'), 0)::bigint AS reserved, \
               coalesce(sum(quantity) FILTER (WHERE state = 'committed'), 0)::bigint AS sold \
        FROM reservations GROUP BY product_id) \
    SELECT i.product_id, i.received, i.on_hand::bigint, i.reserved::bigint, i.sold::bigint, \
           coalesce(r.reserved, 0) AS rows_reserved, coalesce(r.sold, 0) AS rows_sold \
    FROM inventory i LEFT JOIN r ON r.product_id = i.product_id";

/// One product's counters and its reservation rows' sums.
#[derive(sqlx::FromRow)]
struct Row {
    product_id: Uuid,
    received: i64,
    on_hand: i64,
    reserved: i64,
    sold: i64,
    rows_reserved: i64,
    rows_sold: i64,
}

/// The catalog's invariants, judged now from its own tables.
#[utoipa::path(get, path = "/invariants", tag = "chaos",
    responses((status = 200, body = CatalogInvariants), (status = 503, body = Problem)))]
pub async fn get_invariants(
    State(state): State<AppState>,
) -> Result<Json<CatalogInvariants>, Problem> {
    // One snapshot: the per-product rows are judged in Rust so totals and offenders agree.
    let rows: Vec<Row> = sqlx::query_as(PER_PRODUCT)
        .fetch_all(&state.pool)
        .await
        .map_err(db_problem)?;
    let messaging = lab_messaging::invariants::for_route(&state.pool).await?;
    let conserved = offenders(&rows, |r| r.received != r.on_hand + r.reserved + r.sold);
    let non_negative = offenders(&rows, |r| r.on_hand < 0 || r.reserved < 0 || r.sold < 0);
    let matching = offenders(&rows, |r| {
        r.reserved != r.rows_reserved || r.sold != r.rows_sold
    });
    let stock_conserved = StockConserved {
        held: conserved.held,
        products: i64::try_from(rows.len()).unwrap_or(i64::MAX),
        received: rows.iter().map(|r| r.received).sum(),
        on_hand: rows.iter().map(|r| r.on_hand).sum(),
        reserved: rows.iter().map(|r| r.reserved).sum(),
        sold: rows.iter().map(|r| r.sold).sum(),
        violations: conserved.violations,
        product_ids: conserved.product_ids,
    };
    Ok(Json(CatalogInvariants {
        held: stock_conserved.held && non_negative.held && matching.held && messaging.held(),
        stock_conserved,
        stock_non_negative: non_negative,
        reservations_match_inventory: matching,
        messaging,
    }))
}

/// The products for which `broken` is true: their count and the first [`MAX_IDS`] ids.
fn offenders(rows: &[Row], broken: impl Fn(&Row) -> bool) -> OffendingProducts {
    let bad: Vec<Uuid> = rows
        .iter()
        .filter(|r| broken(r))
        .map(|r| r.product_id)
        .collect();
    let violations = i64::try_from(bad.len()).unwrap_or(i64::MAX);
    OffendingProducts {
        held: bad.is_empty(),
        violations,
        product_ids: bad.into_iter().take(MAX_IDS as usize).collect(),
    }
}
