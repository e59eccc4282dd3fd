//! The seed products, created idempotently at start (`ON CONFLICT (sku) DO NOTHING`): the demos
//! and journeys use them. Ids are fixed so every replica and every run agrees on them.

use sqlx::PgPool;
use uuid::Uuid;

use crate::products::{self, NewProduct};

/// A seeded product: SKU, name, description, price in cents, initial stock, demo flag.
struct Seed(&'static str, &'static str, &'static str, i64, i32, bool);

const SEEDS: [Seed; 8] = [
    Seed(
        "LAB-MUG",
        "Lab mug",
        "Stoneware, 350 ml, survives every deploy.",
        1_400,
        500,
        false,
    ),
    Seed(
        "LAB-TEE",
        "Chaos tee",
        "Organic cotton; the breaker state machine on the back.",
        2_500,
        300,
        false,
    ),
    Seed(
        "LAB-STICKERS",
        "Sticker pack",
        "Outbox, inbox, saga: eight stickers.",
        600,
        2_000,
        false,
    ),
    Seed(
        "LAB-HOODIE",
        "Resilience hoodie",
        "Warm under any fault.",
        5_900,
        120,
        false,
    ),
    Seed(
        "LAB-NOTEBOOK",
        "ADR notebook",
        "Dotted pages for decisions on record.",
        1_200,
        400,
        false,
    ),
    Seed(
        "DEMO-RACE",
        "Race demo item",
        "Demo product: concurrent writers race for its stock row.",
        1_000,
        100,
        true,
    ),
    Seed(
        "DEMO-LAST-UNIT",
        "Last-unit demo item",
        "Demo product: N buyers for one unit.",
        1_000,
        1,
        true,
    ),
    Seed(
        "DEMO-CACHE",
        "Cache demo item",
        "Demo product: its price changes to show cache convergence.",
        1_000,
        100,
        true,
    ),
];

/// Namespace of the seed ids (UUIDv5 of the SKU), so ids are stable across runs.
const SEED_NAMESPACE: Uuid = Uuid::from_u128(0x6c61_622d_6361_7461_6c6f_672d_7365_6564);

/// The fixed id of the seed product with `sku`.
pub fn seed_id(sku: &str) -> Uuid {
    Uuid::new_v5(&SEED_NAMESPACE, sku.as_bytes())
}

/// Creates any seed product that does not exist yet; leaves existing ones as they are.
pub async fn run(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut created = 0;
    for Seed(sku, name, description, price_minor, stock, demo) in SEEDS {
        let new = NewProduct {
            id: seed_id(sku),
            sku: sku.into(),
            name: name.into(),
            description: description.into(),
            price_minor,
            currency: "USD",
            demo,
            initial_stock: stock,
        };
        if products::create(pool, &new).await?.is_some() {
            created += 1;
        }
    }
    Ok(created)
}
