//! `GET /invariants`: a fresh pending order is within its deadline and holds every invariant;
//! backdated past the deadline, or sharing its claim with a second order, it is reported by id.

use lab_test_support::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{line, place, shop};

async fn pool(app: &TestApp) -> PgPool {
    lab_db::connect(
        &app.env.database("orders"),
        "orders",
        "invariants-test",
        "-",
    )
    .await
    .unwrap()
}

async fn invariants(app: &TestApp, query: &str) -> Value {
    let (status, body) = app.get_json(&format!("/invariants{query}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Places an order as `customer` with `key` and returns its id.
async fn placed(app: &TestApp, customer: &str, key: &str) -> Uuid {
    let body = json!({"lines": [line("LAB-STICKERS", 1)], "provider": "paypal"});
    let (status, _, body) = place(app, Some(key), Some(customer), &body).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_fresh_pending_order_holds_every_invariant() {
    let shop = shop().await;
    placed(&shop.orders, "ada", "k-1").await;

    let body = invariants(&shop.orders, "").await;

    assert_eq!(body["held"], true, "{body}");
    assert_eq!(body["by_status"]["Pending"], 1, "{body}");
    let deadline = &body["terminal_or_within_deadline"];
    assert_eq!(deadline["pending"], 1, "{body}");
    assert_eq!(deadline["overdue"], 0, "{body}");
    assert_eq!(
        deadline["deadline_ms"],
        lab_orders::invariants::DEFAULT_DEADLINE_MS,
        "{body}"
    );
    assert_eq!(body["one_claim_per_key"]["held"], true, "{body}");
    assert_eq!(body["one_claim_per_key"]["claims"], 1, "{body}");
    let (_, doc) = shop.orders.get_json("/openapi.json").await;
    assert!(doc["paths"]["/invariants"]["get"].is_object(), "{doc}");
}

#[tokio::test]
async fn a_pending_order_backdated_past_its_deadline_is_reported_overdue() {
    let shop = shop().await;
    let late = placed(&shop.orders, "ada", "k-late").await;
    let fresh = placed(&shop.orders, "ada", "k-fresh").await;
    sqlx::query("UPDATE orders SET placed_at = now() - interval '10 minutes' WHERE id = $1")
        .bind(late)
        .execute(&pool(&shop.orders).await)
        .await
        .unwrap();

    // Judged by a 5 minute deadline, the backdated order is late and the fresh one is not.
    let body = invariants(&shop.orders, "?deadline_ms=300000").await;

    assert_eq!(body["held"], false, "{body}");
    let deadline = &body["terminal_or_within_deadline"];
    assert_eq!(deadline["held"], false, "{body}");
    assert_eq!(deadline["pending"], 2, "{body}");
    assert_eq!(deadline["overdue"], 1, "{body}");
    assert_eq!(deadline["order_ids"], json!([late.to_string()]), "{body}");
    assert_ne!(late, fresh);
    // By the default deadline (25 min) it is still in flight.
    assert_eq!(
        invariants(&shop.orders, "").await["terminal_or_within_deadline"]["held"],
        true
    );
}

#[tokio::test]
async fn a_second_order_on_one_claim_breaks_one_claim_per_key() {
    let shop = shop().await;
    let first = placed(&shop.orders, "ada", "k-1").await;
    let pool = pool(&shop.orders).await;

    // The UNIQUE constraint refuses this; the invariant must catch it if it is ever lost.
    sqlx::query("ALTER TABLE orders DROP CONSTRAINT orders_claim_id_key")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO orders (id, customer, idempotency_key, claim_id, provider, currency, total_minor) \
         SELECT $2, customer, idempotency_key, claim_id, provider, currency, total_minor \
         FROM orders WHERE id = $1",
    )
    .bind(first)
    .bind(Uuid::now_v7())
    .execute(&pool)
    .await
    .unwrap();
    let claim: Uuid = sqlx::query_scalar("SELECT claim_id FROM orders WHERE id = $1")
        .bind(first)
        .fetch_one(&pool)
        .await
        .unwrap();
    let body = invariants(&shop.orders, "").await;

    assert_eq!(body["held"], false, "{body}");
    let claims = &body["one_claim_per_key"];
    assert_eq!(claims["held"], false, "{body}");
    assert_eq!(claims["claims_with_two_orders"], 1, "{body}");
    assert_eq!(claims["claim_ids"], json!([claim.to_string()]), "{body}");
}

#[tokio::test]
async fn statuses_of_answers_the_orders_that_exist() {
    let shop = shop().await;
    let order = placed(&shop.orders, "ada", "k-1").await;
    let unknown = Uuid::now_v7();

    let body = invariants(&shop.orders, &format!("?statuses_of={order},%20{unknown}")).await;

    assert_eq!(
        body["statuses_of"],
        json!({order.to_string(): "Pending"}),
        "{body}"
    );
}

#[tokio::test]
async fn a_deadline_or_an_id_that_does_not_parse_is_a_problem() {
    let shop = shop().await;

    for (query, status) in [("deadline_ms=soon", 400), ("statuses_of=not-a-uuid", 422)] {
        let response = shop.orders.get(&format!("/invariants?{query}")).await;

        assert_eq!(response.status(), status, "{query}");
        assert_eq!(
            response.headers()["content-type"],
            lab_http::PROBLEM_JSON,
            "{query}"
        );
    }
}
