//! Placing an order: the key and the customer are required, lines are validated and priced by
//! a real catalog, the order and its `OrderPlaced` event are written once however often and
//! however concurrently the request is repeated, and only the owner can read it.

use std::sync::Arc;
use std::time::Duration;

use lab_contracts::{Message, OrderPlaced};
use serde_json::{Value, json};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::helpers::{
    CATALOG_ADMIN, DEADLINE, env, get_order, line, place, settings, shop, spawn_app, spawn_catalog,
    tap,
};

fn cart() -> Value {
    json!({ "lines": [line("LAB-MUG", 2), line("LAB-TEE", 1)], "provider": "stripe" })
}

/// OrderPlaced rows ever written to the orders outbox.
async fn events_written(app: &lab_test_support::TestApp) -> i64 {
    let mut conn = app.env.db().admin_connection().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM orders.lab_outbox WHERE routing_key = $1")
        .bind(OrderPlaced::NAME)
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_order_without_an_idempotency_key_is_400_and_without_a_customer_401() {
    let app = spawn_app().await;

    let (no_key, _, problem) = place(&app, None, Some("alice"), &cart()).await;
    let (no_customer, _, _) = place(&app, Some("k1"), None, &cart()).await;
    let (long_key, _, _) = place(&app, Some(&"k".repeat(256)), Some("alice"), &cart()).await;

    assert_eq!(no_key, 400);
    assert_eq!(problem["type"], "urn:lab:problem:idempotency-key-required");
    assert_eq!(no_customer, 401);
    assert_eq!(long_key, 400);
}

#[tokio::test]
async fn bad_lines_and_providers_are_422_naming_the_field() {
    let app = spawn_app().await;
    let many: Vec<Value> = (0..21).map(|_| line("LAB-MUG", 1)).collect();
    let cases = [
        (json!({"lines": [], "provider": "stripe"}), "lines"),
        (json!({"lines": many, "provider": "stripe"}), "lines"),
        (
            json!({"lines": [line("LAB-MUG", 1), line("LAB-TEE", 0)], "provider": "stripe"}),
            "lines[1].quantity",
        ),
        (
            json!({"lines": [line("LAB-MUG", 101)], "provider": "stripe"}),
            "lines[0].quantity",
        ),
        (
            json!({"lines": [line("LAB-MUG", 1)], "provider": "visa"}),
            "provider",
        ),
    ];

    for (body, field) in cases {
        let (status, _, problem) = place(&app, Some("k"), Some("alice"), &body).await;

        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["field"], field, "{body}");
    }
}

#[tokio::test]
async fn an_unknown_product_is_422_naming_its_line_and_mixed_currencies_are_422() {
    let shop = shop().await;
    let euro = shop
        .catalog
        .client
        .post(shop.catalog.url("/products"))
        .bearer_auth(CATALOG_ADMIN)
        .json(
            &json!({"sku": "EURO-MUG", "name": "Euro mug", "price_minor": 1200,
                      "currency": "EUR", "initial_stock": 5}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(euro.status(), 201);
    let euro: Value = euro.json().await.unwrap();

    let unknown = json!({"lines": [line("LAB-MUG", 1),
        {"product_id": Uuid::now_v7(), "quantity": 1}], "provider": "paypal"});
    let (unknown_status, _, unknown_problem) =
        place(&shop.orders, Some("k1"), Some("alice"), &unknown).await;
    let mixed = json!({"lines": [line("LAB-MUG", 1),
        {"product_id": euro["id"], "quantity": 1}], "provider": "paypal"});
    let (mixed_status, _, mixed_problem) =
        place(&shop.orders, Some("k2"), Some("alice"), &mixed).await;

    assert_eq!(unknown_status, 422);
    assert_eq!(unknown_problem["field"], "lines[1].product_id");
    assert_eq!(mixed_status, 422);
    assert_eq!(mixed_problem["field"], "lines[1].product_id");
    assert_eq!(events_written(&shop.orders).await, 0);
}

#[tokio::test]
async fn an_unreachable_catalog_is_503_and_places_nothing() {
    let app = spawn_app().await;

    let (status, _, problem) = place(&app, Some("k"), Some("alice"), &cart()).await;

    assert_eq!(status, 503);
    assert_eq!(problem["dependency"], "catalog");
    assert_eq!(events_written(&app).await, 0);
}

#[tokio::test]
async fn a_dead_catalog_replica_costs_a_retry_not_the_order() {
    let env = env().await;
    let catalog = spawn_catalog(&env).await;
    let dead = lab_test_support::closed_port_url("http");
    let orders = env
        .spawn(
            lab_orders::build,
            lab_orders::Settings {
                catalog_urls: format!("{dead},{}", catalog.base_url),
                ..settings(&env)
            },
        )
        .await;

    // Round-robin puts every other first attempt on the dead replica.
    for i in 0..4 {
        let (status, _, body) = place(&orders, Some(&format!("k{i}")), Some("ivan"), &cart()).await;

        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test]
async fn a_placed_order_is_202_pending_priced_by_catalog_and_its_event_is_published() {
    let shop = shop().await;
    let bus = tap(&shop.orders).await;

    let (status, headers, body) = place(&shop.orders, Some("k-1"), Some("alice"), &cart()).await;
    let event = bus.next_within(DEADLINE).await;
    let id = body["order_id"].as_str().unwrap().to_owned();
    let (read_status, order) = get_order(&shop.orders, &id, "alice").await;

    assert_eq!(status, 202);
    assert_eq!(body["status"], "Pending");
    assert_eq!(body["links"]["self"], format!("/orders/{id}"));
    assert_eq!(headers["location"], format!("/orders/{id}").as_str());
    let event = event.expect("OrderPlaced was published");
    assert_eq!(event.kind, OrderPlaced::NAME);
    assert_eq!(event.correlation_id.to_string(), id);
    let placed: OrderPlaced = serde_json::from_value(event.payload).unwrap();
    assert_eq!(placed.order_id.to_string(), id);
    assert_eq!(placed.customer, "alice");
    assert_eq!(placed.provider, "stripe");
    // Seed prices: mug 14.00, tee 25.00.
    assert_eq!(placed.total.amount_minor, 2 * 1_400 + 2_500);
    assert_eq!(placed.total.currency, "USD");
    assert_eq!(placed.lines[0].unit_price_minor, 1_400);
    assert_eq!(read_status, 200);
    assert_eq!(order["status"], "Pending");
    assert_eq!(order["total"]["amount_minor"], 5_300);
    assert_eq!(order["lines"][1]["name"], "Chaos tee");
    assert_eq!(order["history"], json!([]));
    assert_eq!(order["outcome"], Value::Null);
}

#[tokio::test]
async fn the_same_key_sent_ten_times_at_once_places_one_order_and_one_event() {
    let shop = shop().await;
    let bus = tap(&shop.orders).await;
    let barrier = Arc::new(Barrier::new(10));
    let orders = Arc::new(shop.orders);

    let requests = (0..10).map(|_| {
        let (orders, barrier) = (orders.clone(), barrier.clone());
        tokio::spawn(async move {
            barrier.wait().await;
            place(&orders, Some("same-key"), Some("bob"), &cart()).await
        })
    });
    let results: Vec<_> = futures::future::join_all(requests)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let first = bus.next_within(DEADLINE).await;
    let second = bus.next_within(Duration::from_secs(1)).await;

    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(_, _, b)| b["order_id"].to_string())
        .collect();
    assert!(results.iter().all(|(s, _, _)| *s == 202), "{results:?}");
    assert_eq!(ids.len(), 1, "every request got the same order");
    assert_eq!(
        results
            .iter()
            .filter(|(_, h, _)| h.contains_key("idempotent-replayed"))
            .count(),
        9
    );
    assert!(first.is_some());
    assert!(second.is_none(), "no second OrderPlaced was published");
    assert_eq!(events_written(&orders).await, 1);
    let metrics = orders.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("orders_placed_total 1\n"), "{metrics}");
    assert!(metrics.contains("orders_replayed_total 9\n"), "{metrics}");
}

#[tokio::test]
async fn a_repeat_returns_the_same_order_and_a_different_body_under_the_key_is_422() {
    let shop = shop().await;
    let (_, _, first) = place(&shop.orders, Some("k"), Some("carol"), &cart()).await;

    let (status, headers, again) = place(&shop.orders, Some("k"), Some("carol"), &cart()).await;
    let other = json!({"lines": [line("LAB-MUG", 3)], "provider": "stripe"});
    let (reused, _, problem) = place(&shop.orders, Some("k"), Some("carol"), &other).await;
    let (other_customer, _, theirs) = place(&shop.orders, Some("k"), Some("dave"), &cart()).await;

    assert_eq!(status, 202);
    assert_eq!(again, first);
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(reused, 422);
    assert_eq!(problem["type"], "urn:lab:problem:idempotency-key-reused");
    assert_eq!(other_customer, 202, "keys are scoped by customer");
    assert_ne!(theirs["order_id"], first["order_id"]);
    assert_eq!(events_written(&shop.orders).await, 2);
}

#[tokio::test]
async fn another_customer_cannot_read_an_order_and_gets_404() {
    let shop = shop().await;
    let (_, _, placed) = place(&shop.orders, Some("k"), Some("erin"), &cart()).await;
    let id = placed["order_id"].as_str().unwrap();

    let (owner, _) = get_order(&shop.orders, id, "erin").await;
    let (stranger, problem) = get_order(&shop.orders, id, "mallory").await;
    let (missing, _) = get_order(&shop.orders, &Uuid::now_v7().to_string(), "erin").await;
    let anonymous = shop.orders.get(&format!("/orders/{id}")).await.status();

    assert_eq!(owner, 200);
    assert_eq!(stranger, 404);
    assert_eq!(problem["status"], 404);
    assert_eq!(missing, 404);
    assert_eq!(anonymous, 401);
}

#[tokio::test]
async fn once_the_keys_claim_has_expired_the_key_places_a_new_order() {
    let shop = shop().await;
    let (_, _, first) = place(&shop.orders, Some("k"), Some("liz"), &cart()).await;
    let mut conn = shop.orders.env.db().admin_connection().await.unwrap();
    sqlx::query(
        "UPDATE orders.claims SET expires_at = now() - interval '1 second' \
         WHERE scope = 'order:liz' AND key = 'k'",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let (status, headers, second) = place(&shop.orders, Some("k"), Some("liz"), &cart()).await;

    assert_eq!(status, 202);
    assert!(!headers.contains_key("idempotent-replayed"));
    assert_ne!(second["order_id"], first["order_id"]);
    assert_eq!(events_written(&shop.orders).await, 2);
}
