//! `GET /invariants`: stock conserved and matching its reservations on fresh data, and each
//! check reported broken, with the product's id, once the test breaks it in the database.

use lab_catalog::stock::{self, Line};
use lab_test_support::TestApp;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::spawn_app;

async fn pool(app: &TestApp) -> PgPool {
    lab_db::connect(
        &app.env.database("catalog"),
        "catalog",
        "invariants-test",
        "-",
    )
    .await
    .unwrap()
}

async fn invariants(app: &TestApp) -> Value {
    let (status, body) = app.get_json("/invariants").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The seeded product with the most stock.
async fn some_product(pool: &PgPool) -> Uuid {
    sqlx::query_scalar("SELECT product_id FROM inventory ORDER BY on_hand DESC, product_id LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn fresh_stock_with_reservations_holds_every_invariant() {
    let app = spawn_app().await;
    let pool = pool(&app).await;
    let product = some_product(&pool).await;
    let line = Line {
        product_id: product,
        quantity: 1,
    };
    let (reserved, committed) = (Uuid::now_v7(), Uuid::now_v7());
    stock::reserve(&pool, reserved, &[line]).await.unwrap();
    stock::reserve(&pool, committed, &[line]).await.unwrap();
    stock::commit(&pool, committed).await.unwrap();

    let body = invariants(&app).await;

    assert_eq!(body["held"], true, "{body}");
    let conserved = &body["stock_conserved"];
    assert!(conserved["products"].as_i64().unwrap() >= 1, "{body}");
    assert_eq!(
        conserved["received"].as_i64().unwrap(),
        conserved["on_hand"].as_i64().unwrap()
            + conserved["reserved"].as_i64().unwrap()
            + conserved["sold"].as_i64().unwrap(),
        "{body}"
    );
    assert_eq!(conserved["reserved"], 1, "{body}");
    assert_eq!(conserved["sold"], 1, "{body}");
    assert_eq!(body["reservations_match_inventory"]["held"], true, "{body}");
    let (_, doc) = app.get_json("/openapi.json").await;
    assert!(doc["paths"]["/invariants"]["get"].is_object(), "{doc}");
    assert_eq!(
        body["messaging"]["dead_letters"]["outstanding"], 0,
        "{body}"
    );
}

#[tokio::test]
async fn a_reserved_count_without_its_reservation_row_is_reported_with_the_product() {
    let app = spawn_app().await;
    let pool = pool(&app).await;
    let product = some_product(&pool).await;

    // Conserved (one unit moves from on hand to reserved) but no reservation says so.
    sqlx::query(
        "UPDATE inventory SET on_hand = on_hand - 1, reserved = reserved + 1 WHERE product_id = $1",
    )
    .bind(product)
    .execute(&pool)
    .await
    .unwrap();
    let body = invariants(&app).await;

    assert_eq!(body["held"], false, "{body}");
    assert_eq!(body["stock_conserved"]["held"], true, "{body}");
    let matching = &body["reservations_match_inventory"];
    assert_eq!(matching["held"], false, "{body}");
    assert_eq!(matching["violations"], 1, "{body}");
    assert_eq!(matching["product_ids"][0], product.to_string(), "{body}");
}

#[tokio::test]
async fn stock_on_hand_bumped_without_a_receipt_breaks_conservation() {
    let app = spawn_app().await;
    let pool = pool(&app).await;
    let product = some_product(&pool).await;

    // The table's CHECK refuses this; the invariant must catch it if the CHECK is ever lost.
    sqlx::query("ALTER TABLE inventory DROP CONSTRAINT stock_is_conserved")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE inventory SET on_hand = on_hand + 5 WHERE product_id = $1")
        .bind(product)
        .execute(&pool)
        .await
        .unwrap();
    let body = invariants(&app).await;

    assert_eq!(body["held"], false, "{body}");
    let conserved = &body["stock_conserved"];
    assert_eq!(conserved["held"], false, "{body}");
    assert_eq!(conserved["violations"], 1, "{body}");
    assert_eq!(conserved["product_ids"][0], product.to_string(), "{body}");
    assert_eq!(
        conserved["received"].as_i64().unwrap() + 5,
        conserved["on_hand"].as_i64().unwrap()
            + conserved["reserved"].as_i64().unwrap()
            + conserved["sold"].as_i64().unwrap(),
        "{body}"
    );
}

#[tokio::test]
async fn a_dead_letter_and_a_message_stuck_behind_a_paused_relay_are_reported() {
    let app = spawn_app().await;
    let pool = pool(&app).await;
    let dead = Uuid::now_v7();

    lab_messaging::outbox::pause(&pool).await.unwrap();
    sqlx::query(
        "INSERT INTO lab_outbox (message_id, routing_key, envelope, created_at) \
         VALUES ($1, 'catalog.test', '{}', clock_timestamp() - interval '1 minute')",
    )
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO lab_dead_letters \
             (consumer, message_id, message_type, routing_key, body, error, attempts) \
         VALUES ('catalog', $1, 'test', 'catalog.test', '\\x7b7d', 'boom', 4)",
    )
    .bind(dead)
    .execute(&pool)
    .await
    .unwrap();
    let body = invariants(&app).await;

    assert_eq!(body["held"], false, "{body}");
    let outbox = &body["messaging"]["outbox"];
    assert_eq!(outbox["held"], false, "{body}");
    assert_eq!(outbox["pending"], 1, "{body}");
    assert_eq!(outbox["paused"], true, "{body}");
    assert!(
        outbox["oldest_pending_age_ms"].as_u64().unwrap() >= 60_000,
        "{body}"
    );
    let dead_letters = &body["messaging"]["dead_letters"];
    assert_eq!(dead_letters["held"], false, "{body}");
    assert_eq!(dead_letters["outstanding"], 1, "{body}");
    assert_eq!(
        dead_letters["message_ids"],
        serde_json::json!([dead.to_string()]),
        "{body}"
    );
}
