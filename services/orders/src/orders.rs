//! Orders in PostgreSQL: placing one is one transaction holding the customer's claim on the
//! `Idempotency-Key`, the order with its priced lines, and the `OrderPlaced` outbox row, so the
//! order exists and its event will be published, or neither. A repeat of the key finds the
//! order through the claim instead of writing a second one.

use chrono::{DateTime, Utc};
use lab_contracts::{Message, Money, OrderLine, OrderPlaced};
use lab_messaging::{Envelope, MessagingError, outbox};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::claims;
use crate::domain::{ClaimKey, Customer, OrderStatus, Provider, Ttl, Wanted};
use crate::prices::Priced;

/// What went wrong storing or reading an order.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Outbox(#[from] MessagingError),
    #[error("claim {0} is held but no order carries it")]
    OrphanClaim(Uuid),
}

/// A priced line, ready to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i32,
    pub unit_price_minor: i64,
}

/// A validated order with prices, before it is stored.
#[derive(Debug, Clone)]
pub struct NewOrder {
    pub customer: Customer,
    pub key: ClaimKey,
    pub provider: Provider,
    pub currency: String,
    pub lines: Vec<PricedLine>,
    pub total_minor: i64,
    /// The demo's own payment window (seconds), passed on to checkout in `OrderPlaced`.
    pub payment_window_s: Option<u32>,
    /// Trace context of the request, carried on into the saga.
    pub traceparent: Option<String>,
}

/// An order found by its claim: what a repeat needs to answer, and to compare its request with.
#[derive(Debug, Clone)]
pub struct Existing {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub provider: String,
    /// `(product_id, quantity)` per line, in line order.
    pub lines: Vec<(Uuid, i32)>,
}

impl Existing {
    /// Whether a repeat asked for exactly what the first request did.
    pub fn same_request(&self, provider: Provider, wanted: &[Wanted]) -> bool {
        self.provider == provider.as_str()
            && self
                .lines
                .iter()
                .copied()
                .eq(wanted.iter().map(|w| (w.product_id, w.quantity)))
    }
}

/// Whether `place` wrote the order or found the one an earlier request with the key wrote.
#[derive(Debug, Clone)]
pub enum Placed {
    New { order_id: Uuid },
    Repeat(Existing),
}

/// Prices `wanted` from `prices` (one entry per product), checking one currency for all lines.
/// `Err` names the first line whose currency differs.
pub fn price_lines(
    wanted: &[Wanted],
    prices: &[Priced],
) -> Result<(Vec<PricedLine>, String, i64), usize> {
    let mut lines = Vec::with_capacity(wanted.len());
    let mut currency: Option<&str> = None;
    let mut total: i64 = 0;
    for (i, w) in wanted.iter().enumerate() {
        let Some(p) = prices.iter().find(|p| p.product_id == w.product_id) else {
            return Err(i);
        };
        match currency {
            Some(c) if c != p.currency => return Err(i),
            _ => currency = Some(&p.currency),
        }
        // Catalog bounds prices to 10^12 and lines are ≤ 20 × 100 units: no overflow, but
        // saturate rather than trust another service's bound.
        total = total.saturating_add(p.price_minor.saturating_mul(i64::from(w.quantity)));
        lines.push(PricedLine {
            product_id: w.product_id,
            name: p.name.clone(),
            quantity: w.quantity,
            unit_price_minor: p.price_minor,
        });
    }
    Ok((lines, currency.unwrap_or("USD").to_owned(), total))
}

/// The order holding the customer's live claim on `key`, if any (the fast path of a repeat: no
/// catalog call, no transaction).
pub async fn find_claimed(
    pool: &PgPool,
    customer: &Customer,
    key: &ClaimKey,
) -> Result<Option<Existing>, OrderError> {
    let order_id: Option<Uuid> = sqlx::query_scalar(
        "SELECT o.id FROM claims c JOIN orders o ON o.claim_id = c.claim_id \
         WHERE c.scope = $1 AND c.key = $2 AND c.expires_at > now()",
    )
    .bind(customer.claim_scope())
    .bind(key.as_str())
    .fetch_optional(pool)
    .await?;
    match order_id {
        Some(id) => existing(pool, id).await,
        None => Ok(None),
    }
}

async fn existing(
    conn: impl sqlx::PgExecutor<'_> + Copy,
    order_id: Uuid,
) -> Result<Option<Existing>, OrderError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT status, provider FROM orders WHERE id = $1")
            .bind(order_id)
            .fetch_optional(conn)
            .await?;
    let Some((status, provider)) = row else {
        return Ok(None);
    };
    let lines: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT product_id, quantity FROM order_lines WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(order_id)
    .fetch_all(conn)
    .await?;
    Ok(Some(Existing {
        order_id,
        status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Pending),
        provider,
        lines,
    }))
}

/// Claims the key and writes the order and its `OrderPlaced` event, in one transaction; or, when
/// another request holds the claim (it committed first, or this one waited for it on the
/// unique index), returns that request's order.
pub async fn place(pool: &PgPool, order: &NewOrder, ttl: Ttl) -> Result<Placed, OrderError> {
    let mut tx = lab_db::begin(pool).await?;
    let claimed = claims::claim(&mut tx, &order.customer.claim_scope(), &order.key, ttl).await?;
    if !claimed.created {
        tx.rollback().await?;
        let found: Option<Uuid> = sqlx::query_scalar("SELECT id FROM orders WHERE claim_id = $1")
            .bind(claimed.claim_id)
            .fetch_optional(pool)
            .await?;
        let found = match found {
            Some(id) => existing(pool, id).await?,
            None => None,
        };
        return found
            .map(Placed::Repeat)
            .ok_or(OrderError::OrphanClaim(claimed.claim_id));
    }
    let order_id = Uuid::now_v7();
    // The order and its lines in one statement (`unnest … WITH ORDINALITY` numbers the lines
    // from 1, stored from 0): one round trip whatever the number of lines.
    let product_ids: Vec<Uuid> = order.lines.iter().map(|l| l.product_id).collect();
    let names: Vec<&str> = order.lines.iter().map(|l| l.name.as_str()).collect();
    let quantities: Vec<i32> = order.lines.iter().map(|l| l.quantity).collect();
    let unit_prices: Vec<i64> = order.lines.iter().map(|l| l.unit_price_minor).collect();
    sqlx::query(
        "WITH placed AS ( \
             INSERT INTO orders \
                 (id, customer, idempotency_key, claim_id, provider, currency, total_minor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id) \
         INSERT INTO order_lines (order_id, line_no, product_id, name, quantity, unit_price_minor) \
         SELECT placed.id, l.n - 1, l.product_id, l.name, l.quantity, l.unit_price_minor \
         FROM placed, unnest($8::uuid[], $9::text[], $10::int[], $11::bigint[]) \
             WITH ORDINALITY AS l (product_id, name, quantity, unit_price_minor, n)",
    )
    .bind(order_id)
    .bind(order.customer.as_str())
    .bind(order.key.as_str())
    .bind(claimed.claim_id)
    .bind(order.provider.as_str())
    .bind(&order.currency)
    .bind(order.total_minor)
    .bind(&product_ids)
    .bind(&names)
    .bind(&quantities)
    .bind(&unit_prices)
    .execute(&mut *tx)
    .await?;
    let event = OrderPlaced {
        order_id,
        customer: order.customer.as_str().to_owned(),
        lines: order
            .lines
            .iter()
            .map(|l| OrderLine {
                product_id: l.product_id,
                quantity: l.quantity,
                unit_price_minor: l.unit_price_minor,
            })
            .collect(),
        total: Money {
            amount_minor: order.total_minor,
            currency: order.currency.clone(),
        },
        provider: order.provider.as_str().to_owned(),
        payment_window_s: order.payment_window_s,
    };
    let mut envelope = Envelope {
        // Every message of this order's saga shares the order's id as its correlation id.
        correlation_id: order_id,
        ..Envelope::new(
            OrderPlaced::NAME,
            serde_json::to_value(&event).map_err(MessagingError::from)?,
        )
    };
    if let Some(traceparent) = &order.traceparent {
        envelope = envelope.with_traceparent(traceparent.clone());
    }
    outbox::enqueue(&mut tx, &envelope).await?;
    tx.commit().await?;
    Ok(Placed::New { order_id })
}

/// A line as served.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct LineView {
    pub product_id: Uuid,
    pub name: String,
    pub quantity: i32,
    /// Unit price in minor units, as catalog had it when the order was placed.
    pub unit_price_minor: i64,
}

/// One saga transition as orders recorded it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Transition {
    pub from: String,
    pub to: String,
    pub event: String,
    pub terminal: bool,
    pub compensations: Vec<String>,
    /// When checkout made the transition.
    pub occurred_at: DateTime<Utc>,
    /// The message that reported it.
    pub message_id: Uuid,
}

/// An order as stored, for its owner.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stored {
    pub id: Uuid,
    pub customer: String,
    pub status: String,
    pub provider: String,
    pub currency: String,
    pub total_minor: i64,
    pub placed_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The order `id` with its lines and saga history, if it exists. One snapshot for all three
/// reads, so a transition committing in between cannot show in the history while the status
/// still says `Pending`.
pub async fn get(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(Stored, Vec<LineView>, Vec<Transition>)>, OrderError> {
    let mut tx = lab_db::begin(pool).await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let Some(order) = sqlx::query_as::<_, Stored>(
        "SELECT id, customer, status, provider, currency, total_minor, placed_at, finished_at \
         FROM orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let lines = sqlx::query_as::<_, LineView>(
        "SELECT product_id, name, quantity, unit_price_minor FROM order_lines \
         WHERE order_id = $1 ORDER BY line_no",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let history = sqlx::query_as::<_, Transition>(
        "SELECT from_state AS \"from\", to_state AS \"to\", event, terminal, compensations, \
                occurred_at, message_id \
         FROM order_history WHERE order_id = $1 ORDER BY occurred_at, id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((order, lines, history)))
}
