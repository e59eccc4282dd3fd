//! Orders with the real checkout orchestrator and catalog behind it: an order placed over HTTP
//! starts the saga through `OrderPlaced`, and the saga's own `SagaTransitioned` events bring the
//! order to its final state. (Payments is not in this test: a saga that reaches the payment
//! step ends by its deadline, which is the cancellation path.)

use lab_catalog::seed::seed_id;
use lab_test_support::{ServiceMigrator, TestApp, TestEnv, eventually};
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, declare_queues, get_order, line, place, settings, spawn_catalog};

const MIGRATIONS: &[ServiceMigrator] = &[
    (lab_orders::NAME, &lab_orders::MIGRATOR),
    (lab_catalog::NAME, &lab_catalog::MIGRATOR),
    (lab_checkout::NAME, &lab_checkout::MIGRATOR),
];

/// Orders, catalog and checkout on one environment; checkout gives up on payment within
/// `session_ms`.
async fn cluster(session_ms: u64) -> (TestApp, TestApp, TestApp) {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    declare_queues(
        &env,
        &[
            (lab_orders::NAME, lab_orders::messages::routing_keys()),
            (lab_catalog::NAME, lab_catalog::messages::routing_keys()),
            (lab_checkout::NAME, lab_checkout::messages::routing_keys()),
        ],
    )
    .await;
    let catalog = spawn_catalog(&env).await;
    let checkout_settings = lab_checkout::Settings {
        http: env.http(1),
        database: env.database(lab_checkout::NAME),
        amqp: env.amqp(),
        timeouts: lab_checkout::TimeoutSettings {
            session_ms,
            ..lab_checkout::TimeoutSettings::default()
        },
        ..lab_checkout::Settings::default()
    };
    let checkout = env.spawn(lab_checkout::build, checkout_settings).await;
    let orders = env
        .spawn(
            lab_orders::build,
            lab_orders::Settings {
                catalog_urls: catalog.base_url.clone(),
                ..settings(&env)
            },
        )
        .await;
    (orders, catalog, checkout)
}

/// Polls the order until it is no longer `Pending`; panics with the last body after DEADLINE.
async fn finished(orders: &TestApp, id: &str, customer: &str) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    let done = eventually(DEADLINE, || async {
        let (_, order) = get_order(orders, id, customer).await;
        if order["status"].is_string() && order["status"] != "Pending" {
            Some(order)
        } else {
            *last.lock().unwrap() = order;
            None
        }
    })
    .await;
    done.unwrap_or_else(|| {
        panic!(
            "order {id} never finished; last: {:#}",
            last.lock().unwrap()
        )
    })
}

#[tokio::test]
async fn an_order_for_more_than_the_stock_ends_rejected_through_the_real_saga() {
    let (orders, _catalog, _checkout) = cluster(60_000).await;
    let body = json!({"lines": [line("DEMO-LAST-UNIT", 2)], "provider": "stripe"});

    let (status, _, placed) = place(&orders, Some("too-many"), Some("judy"), &body).await;
    let id = placed["order_id"].as_str().unwrap();
    let order = finished(&orders, id, "judy").await;

    assert_eq!(status, 202);
    assert_eq!(order["status"], "Rejected");
    assert_eq!(order["outcome"]["status"], "Rejected");
    assert_eq!(
        order["history"].as_array().unwrap().last().unwrap()["to"],
        "Rejected"
    );
}

#[tokio::test]
async fn an_order_whose_payment_never_comes_ends_cancelled_with_its_stock_released() {
    // Long enough for the stock step, short enough for a test.
    let (orders, catalog, _checkout) = cluster(1_500).await;
    let body = json!({"lines": [line("LAB-HOODIE", 2)], "provider": "paypal"});

    let (status, _, placed) = place(&orders, Some("no-payment"), Some("ken"), &body).await;
    let id = placed["order_id"].as_str().unwrap();
    let order = finished(&orders, id, "ken").await;
    let (_, stock) = catalog
        .get_json(&format!("/products/{}/inventory", seed_id("LAB-HOODIE")))
        .await;

    assert_eq!(status, 202);
    assert_eq!(order["status"], "Cancelled", "{order:#}");
    let compensations = order["outcome"]["compensations"].as_array().unwrap();
    assert!(compensations.contains(&json!("ReleaseStock")), "{order:#}");
    let path: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert!(path.contains(&"StockReserved"), "{path:?}");
    assert_eq!(path.last(), Some(&"Cancelled"));
    // The release reaches catalog through the broker too; the units come back.
    let released = eventually(DEADLINE, || async {
        let (_, stock) = catalog
            .get_json(&format!("/products/{}/inventory", seed_id("LAB-HOODIE")))
            .await;
        (stock["reserved"] == 0 && stock["on_hand"] == 120).then_some(())
    })
    .await;
    assert!(released.is_some(), "stock released; last seen: {stock}");
}
