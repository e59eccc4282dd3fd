//! Stock reservations per order: all lines or none, never oversold, every command idempotent.
//!
//! `reserve` takes each line with `UPDATE inventory SET on_hand = on_hand - q, reserved =
//! reserved + q WHERE product_id = $1 AND on_hand >= q`: the condition and the change are one
//! statement, so two buyers of the last unit cannot both succeed. The answer is recorded per
//! order, so the same command again returns the same answer without touching stock. `commit`
//! (reserved → sold) and `release` (reserved → on hand) act only on rows still `reserved`, so
//! repeats and unknown orders are no-ops; a release that arrives before its reserve leaves a
//! tombstone that refuses the late reserve.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::{Acquire, PgConnection, PgPool};
use uuid::Uuid;

/// One line of an order: a product and how many units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Line {
    pub product_id: Uuid,
    pub quantity: i32,
}

/// A line that could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Short {
    pub product_id: Uuid,
    pub requested: i32,
    /// Units free when the reservation was tried (0 for an unknown product).
    pub available: i32,
}

/// The answer to `ReserveStock`; the same every time the command is repeated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ReserveOutcome {
    Reserved { lines: Vec<Line> },
    Refused { reason: String, short: Vec<Short> },
}

/// What `commit` or `release` changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// Reservation rows moved (0 for a repeat or an unknown order).
    pub lines: u64,
    pub units: i64,
}

/// Serialises every command for one order, so concurrent duplicates see each other's result.
async fn lock_order(tx: &mut PgConnection, order_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 7270002))")
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn recorded(
    tx: &mut PgConnection,
    order_id: Uuid,
) -> Result<Option<ReserveOutcome>, sqlx::Error> {
    let row: Option<(bool, sqlx::types::Json<Vec<Short>>, Option<String>)> = sqlx::query_as(
        "SELECT reserved, shortfall, reason FROM reservation_outcomes WHERE order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((reserved, short, reason)) = row else {
        return Ok(None);
    };
    if !reserved {
        return Ok(Some(ReserveOutcome::Refused {
            reason: reason.unwrap_or_default(),
            short: short.0,
        }));
    }
    let lines: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT product_id, quantity FROM reservations WHERE order_id = $1 ORDER BY product_id",
    )
    .bind(order_id)
    .fetch_all(&mut *tx)
    .await?;
    Ok(Some(ReserveOutcome::Reserved {
        lines: lines
            .into_iter()
            .map(|(product_id, quantity)| Line {
                product_id,
                quantity,
            })
            .collect(),
    }))
}

async fn record_refusal(
    tx: &mut PgConnection,
    order_id: Uuid,
    reason: &str,
    short: &[Short],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO reservation_outcomes (order_id, reserved, shortfall, reason) VALUES ($1, false, $2, $3)")
        .bind(order_id)
        .bind(sqlx::types::Json(short))
        .bind(reason)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Reserves every line of `order_id`, or none, in its own transaction.
pub async fn reserve(
    pool: &PgPool,
    order_id: Uuid,
    lines: &[Line],
) -> Result<ReserveOutcome, sqlx::Error> {
    let mut tx = lab_db::begin(pool).await?;
    let outcome = reserve_in(&mut tx, order_id, lines).await?;
    tx.commit().await?;
    Ok(outcome)
}

/// Reserves every line of `order_id`, or none, inside the caller's transaction (the message
/// consumer's, so the inbox row, the stock change and the reply commit together). Lines for the
/// same product are merged; rows are locked in product order so two orders never deadlock.
pub async fn reserve_in(
    tx: &mut PgConnection,
    order_id: Uuid,
    lines: &[Line],
) -> Result<ReserveOutcome, sqlx::Error> {
    let mut merged: BTreeMap<Uuid, i32> = BTreeMap::new();
    for line in lines {
        *merged.entry(line.product_id).or_default() += line.quantity;
    }
    lock_order(tx, order_id).await?;
    if let Some(outcome) = recorded(tx, order_id).await? {
        return Ok(outcome);
    }
    if merged.is_empty() || merged.values().any(|q| *q <= 0) {
        let reason = "an order needs at least one line, each with a positive quantity";
        record_refusal(tx, order_id, reason, &[]).await?;
        return Ok(ReserveOutcome::Refused {
            reason: reason.into(),
            short: vec![],
        });
    }

    let mut short = Vec::new();
    {
        // A savepoint: if any line is short, the lines already taken are given back at once.
        let mut attempt = (&mut *tx).begin().await?;
        for (&product_id, &quantity) in &merged {
            let taken = sqlx::query(
                "UPDATE inventory SET on_hand = on_hand - $2, reserved = reserved + $2, updated_at = now() \
                 WHERE product_id = $1 AND on_hand >= $2",
            )
            .bind(product_id)
            .bind(quantity)
            .execute(&mut *attempt)
            .await?;
            if taken.rows_affected() == 0 {
                let available: Option<i32> =
                    sqlx::query_scalar("SELECT on_hand FROM inventory WHERE product_id = $1")
                        .bind(product_id)
                        .fetch_optional(&mut *attempt)
                        .await?;
                short.push(Short {
                    product_id,
                    requested: quantity,
                    available: available.unwrap_or(0),
                });
            }
        }
        if short.is_empty() {
            for (&product_id, &quantity) in &merged {
                sqlx::query("INSERT INTO reservations (order_id, product_id, quantity, state) VALUES ($1, $2, $3, 'reserved')")
                    .bind(order_id)
                    .bind(product_id)
                    .bind(quantity)
                    .execute(&mut *attempt)
                    .await?;
            }
            attempt.commit().await?;
        } else {
            attempt.rollback().await?;
        }
    }

    let outcome = if short.is_empty() {
        sqlx::query("INSERT INTO reservation_outcomes (order_id, reserved) VALUES ($1, true)")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        ReserveOutcome::Reserved {
            lines: merged
                .into_iter()
                .map(|(product_id, quantity)| Line {
                    product_id,
                    quantity,
                })
                .collect(),
        }
    } else {
        let reason = "insufficient stock";
        record_refusal(tx, order_id, reason, &short).await?;
        ReserveOutcome::Refused {
            reason: reason.into(),
            short,
        }
    };
    Ok(outcome)
}

/// Moves the order's reserved units to sold. A repeat or an unknown order changes nothing.
pub async fn commit(pool: &PgPool, order_id: Uuid) -> Result<Settled, sqlx::Error> {
    let mut tx = lab_db::begin(pool).await?;
    let settled = commit_in(&mut tx, order_id).await?;
    tx.commit().await?;
    Ok(settled)
}

/// [`commit`] inside the caller's transaction.
pub async fn commit_in(tx: &mut PgConnection, order_id: Uuid) -> Result<Settled, sqlx::Error> {
    settle(
        tx,
        order_id,
        "committed",
        "reserved = reserved - $2, sold = sold + $2",
    )
    .await
}

/// Gives the order's reserved units back. A repeat, an unknown order, or an order already
/// committed changes nothing; a release before any reserve refuses that reserve when it comes.
pub async fn release(pool: &PgPool, order_id: Uuid) -> Result<Settled, sqlx::Error> {
    let mut tx = lab_db::begin(pool).await?;
    let settled = release_in(&mut tx, order_id).await?;
    tx.commit().await?;
    Ok(settled)
}

/// [`release`] inside the caller's transaction.
pub async fn release_in(tx: &mut PgConnection, order_id: Uuid) -> Result<Settled, sqlx::Error> {
    settle(
        tx,
        order_id,
        "released",
        "reserved = reserved - $2, on_hand = on_hand + $2",
    )
    .await
}

async fn settle(
    tx: &mut PgConnection,
    order_id: Uuid,
    to: &'static str,
    change: &'static str,
) -> Result<Settled, sqlx::Error> {
    lock_order(tx, order_id).await?;
    let moved: Vec<(Uuid, i32)> = sqlx::query_as(
        "UPDATE reservations SET state = $2, updated_at = now() \
         WHERE order_id = $1 AND state = 'reserved' RETURNING product_id, quantity",
    )
    .bind(order_id)
    .bind(to)
    .fetch_all(&mut *tx)
    .await?;
    let mut units = 0i64;
    for (product_id, quantity) in &moved {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE inventory SET {change}, updated_at = now() WHERE product_id = $1"
        )))
        .bind(product_id)
        .bind(quantity)
        .execute(&mut *tx)
        .await?;
        units += i64::from(*quantity);
    }
    if to == "released" && moved.is_empty() {
        // A release overtaking its reserve: leave a refusal so the late reserve takes nothing.
        sqlx::query(
            "INSERT INTO reservation_outcomes (order_id, reserved, reason) VALUES ($1, false, 'released before it was reserved') \
             ON CONFLICT (order_id) DO NOTHING",
        )
        .bind(order_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(Settled {
        lines: moved.len() as u64,
        units,
    })
}

/// Stock totals of one product, for invariants and demos.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema,
)]
pub struct Totals {
    pub on_hand: i64,
    pub reserved: i64,
    pub sold: i64,
    pub received: i64,
}

impl Totals {
    /// `received = on_hand + reserved + sold`, and nothing negative.
    pub fn conserved(&self) -> bool {
        self.received == self.on_hand + self.reserved + self.sold
            && self.on_hand >= 0
            && self.reserved >= 0
            && self.sold >= 0
    }
}

/// Totals over every product.
pub async fn totals(pool: &PgPool) -> Result<Totals, sqlx::Error> {
    sqlx::query_as(
        "SELECT COALESCE(sum(on_hand), 0)::bigint AS on_hand, COALESCE(sum(reserved), 0)::bigint AS reserved, \
                COALESCE(sum(sold), 0)::bigint AS sold, COALESCE(sum(received), 0)::bigint AS received FROM inventory",
    )
    .fetch_one(pool)
    .await
}
