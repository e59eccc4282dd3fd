//! Checkout and the real catalog service in one environment (one database, both schemas, one
//! RabbitMQ prefix): the saga's stock step end to end, with payments still played by the test.

use lab_catalog::seed::seed_id;
use lab_contracts::{CreatePaymentSession, Message, OrderLine, ReserveStock, SagaTransitioned};
use lab_test_support::{ServiceMigrator, TestApp, TestEnv};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{Bus, kinds, order_of, settings};

/// The template holds both services' migrations.
const MIGRATIONS: &[ServiceMigrator] = &[
    (lab_checkout::NAME, &lab_checkout::MIGRATOR),
    (lab_catalog::NAME, &lab_catalog::MIGRATOR),
];

/// Checkout and one catalog replica on a fresh environment, and the test's bus.
async fn both() -> (TestApp, TestApp, Bus) {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let catalog_settings = lab_catalog::Settings {
        http: env.http(1),
        database: env.database(lab_catalog::NAME),
        redis: env.redis(),
        amqp: env.amqp(),
        ..lab_catalog::Settings::default()
    };
    let catalog = env.spawn(lab_catalog::build, catalog_settings).await;
    let checkout = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    // Catalog's queue may not be declared yet when checkout's first command is relayed:
    // declaring it here (idempotent) means no command finds no queue.
    bus.declare(lab_catalog::NAME, &lab_catalog::messages::routing_keys())
        .await;
    (checkout, catalog, bus)
}

fn line(sku: &str, quantity: i32) -> OrderLine {
    OrderLine {
        product_id: seed_id(sku),
        quantity,
        unit_price_minor: 1400,
    }
}

async fn inventory(catalog: &TestApp, sku: &str) -> Value {
    let (status, body) = catalog
        .get_json(&format!("/products/{}/inventory", seed_id(sku)))
        .await;
    assert_eq!(status, 200, "{body:#}");
    body
}

#[tokio::test]
async fn catalog_reserves_the_stock_and_the_saga_asks_payments_for_a_session() {
    let (checkout, catalog, bus) = both().await;
    let before = inventory(&catalog, "LAB-MUG").await;
    let order_id = Uuid::now_v7();

    bus.send(&order_of(order_id, vec![line("LAB-MUG", 2)]))
        .await;
    let first = bus.step().await;
    let second = bus.step().await;
    let saga = checkout.get_json(&format!("/sagas/{order_id}")).await.1;
    let after = inventory(&catalog, "LAB-MUG").await;

    assert_eq!(kinds(&first), [ReserveStock::NAME, SagaTransitioned::NAME]);
    assert_eq!(
        kinds(&second),
        [CreatePaymentSession::NAME, SagaTransitioned::NAME]
    );
    assert_eq!(saga["state"], "StockReserved");
    assert_eq!(saga["history"][1]["event"], "StockReserved");
    assert_eq!(
        after["reserved"].as_i64().unwrap() - before["reserved"].as_i64().unwrap(),
        2
    );
}

#[tokio::test]
async fn two_orders_racing_for_the_last_unit_one_reserves_it_and_one_is_rejected() {
    let (checkout, catalog, bus) = both().await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());

    bus.send(&order_of(a, vec![line("DEMO-LAST-UNIT", 1)]))
        .await;
    bus.send(&order_of(b, vec![line("DEMO-LAST-UNIT", 1)]))
        .await;
    let mut states = Vec::new();
    for order_id in [a, b] {
        let saga = checkout
            .wait_json(&format!("/sagas/{order_id}"), |s| {
                s["state"] == "StockReserved" || s["state"] == "Rejected"
            })
            .await;
        states.push(saga["state"].as_str().unwrap().to_owned());
    }
    states.sort();
    let last_unit = inventory(&catalog, "DEMO-LAST-UNIT").await;

    assert_eq!(states, ["Rejected", "StockReserved"]);
    assert_eq!(last_unit["reserved"], 1);
    assert_eq!(last_unit["on_hand"], 0);
}
