//! Products and inventory in PostgreSQL: every read returns `xmin` for the ETag, every write is
//! one conditional statement (see `occ.rs`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// A product as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Product {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    /// Price in minor units (cents).
    pub price_minor: i64,
    pub currency: String,
    /// Whether any visitor may edit it (demo data) or only an administrator.
    pub demo: bool,
    /// Bumped by every write; orders cache entries.
    pub version: i64,
    /// The `xmin` the ETag is made from.
    pub xmin: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A product's stock. `received = on_hand + reserved + sold` always holds (a CHECK enforces it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Inventory {
    pub product_id: Uuid,
    /// Units free to reserve.
    pub on_hand: i32,
    /// Units held for orders in flight.
    pub reserved: i32,
    /// Units of completed orders.
    pub sold: i32,
    /// Every unit ever put into stock.
    pub received: i64,
    /// The `xmin` the ETag is made from.
    pub xmin: String,
    pub updated_at: DateTime<Utc>,
}

const PRODUCT_COLUMNS: &str = "id, sku, name, description, price_minor, currency::text AS currency, demo, version, xmin::text AS xmin, created_at, updated_at";

/// The fields a PATCH may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct ProductChanges {
    pub name: Option<String>,
    pub description: Option<String>,
    pub price_minor: Option<i64>,
    pub currency: Option<&'static str>,
}

/// A validated new product.
#[derive(Debug, Clone)]
pub struct NewProduct {
    pub id: Uuid,
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_minor: i64,
    pub currency: &'static str,
    pub demo: bool,
    pub initial_stock: i32,
}

pub async fn get(pool: &PgPool, id: Uuid) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// A page of products whose name or SKU contains `q` (case-insensitive), by name.
pub async fn list(
    pool: &PgPool,
    q: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Product>, i64), sqlx::Error> {
    let pattern = q.map(|q| {
        format!(
            "%{}%",
            q.to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        )
    });
    let rows = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "SELECT {PRODUCT_COLUMNS} FROM products \
         WHERE $1::text IS NULL OR lower(name) LIKE $1 OR lower(sku) LIKE $1 \
         ORDER BY name, id LIMIT $2 OFFSET $3"
    )))
    .bind(&pattern)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM products WHERE $1::text IS NULL OR lower(name) LIKE $1 OR lower(sku) LIKE $1")
        .bind(&pattern)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// Inserts a product and its stock in one transaction; `Ok(None)` when the SKU is taken.
pub async fn create(pool: &PgPool, new: &NewProduct) -> Result<Option<Product>, sqlx::Error> {
    let mut tx = lab_db::begin(pool).await?;
    let product = sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "INSERT INTO products (id, sku, name, description, price_minor, currency, demo) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING {PRODUCT_COLUMNS}"
    )))
    .bind(new.id)
    .bind(&new.sku)
    .bind(&new.name)
    .bind(&new.description)
    .bind(new.price_minor)
    .bind(new.currency)
    .bind(new.demo)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(product) = product else {
        return Ok(None);
    };
    sqlx::query("INSERT INTO inventory (product_id, on_hand, received) VALUES ($1, $2, $2)")
        .bind(product.id)
        .bind(new.initial_stock)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(product))
}

/// One statement: applies `changes` only if the row still has one of `xmins`.
/// `Ok(None)`: no row matched (gone, or changed since it was read).
pub async fn update(
    pool: &PgPool,
    id: Uuid,
    xmins: &[String],
    changes: &ProductChanges,
) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as::<_, Product>(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET \
           name = COALESCE($3, name), description = COALESCE($4, description), \
           price_minor = COALESCE($5, price_minor), currency = COALESCE($6, currency), \
           version = version + 1, updated_at = now() \
         WHERE id = $1 AND xmin::text = ANY($2) RETURNING {PRODUCT_COLUMNS}"
    )))
    .bind(id)
    .bind(xmins)
    .bind(&changes.name)
    .bind(&changes.description)
    .bind(changes.price_minor)
    .bind(changes.currency)
    .fetch_optional(pool)
    .await
}

/// Deletes the product (and its stock) only if it still has one of `xmins`.
pub async fn delete(pool: &PgPool, id: Uuid, xmins: &[String]) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM products WHERE id = $1 AND xmin::text = ANY($2)")
        .bind(id)
        .bind(xmins)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

const INVENTORY_COLUMNS: &str =
    "product_id, on_hand, reserved, sold, received, xmin::text AS xmin, updated_at";

pub async fn inventory(pool: &PgPool, id: Uuid) -> Result<Option<Inventory>, sqlx::Error> {
    sqlx::query_as::<_, Inventory>(sqlx::AssertSqlSafe(format!(
        "SELECT {INVENTORY_COLUMNS} FROM inventory WHERE product_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// One statement: sets the free stock to `on_hand` if the row still has one of `xmins`,
/// counting the difference as received (a restock) or written off (a correction), so stock
/// stays conserved.
pub async fn set_on_hand(
    pool: &PgPool,
    id: Uuid,
    xmins: &[String],
    on_hand: i32,
) -> Result<Option<Inventory>, sqlx::Error> {
    sqlx::query_as::<_, Inventory>(sqlx::AssertSqlSafe(format!(
        "UPDATE inventory SET received = received + ($3 - on_hand), on_hand = $3, updated_at = now() \
         WHERE product_id = $1 AND xmin::text = ANY($2) RETURNING {INVENTORY_COLUMNS}"
    )))
    .bind(id)
    .bind(xmins)
    .bind(on_hand)
    .fetch_optional(pool)
    .await
}
