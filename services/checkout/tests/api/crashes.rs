//! Crash safety: checkout, catalog or payments is stopped and started again (a new instance on
//! the same database and address) over and over while one order's saga runs, so restarts land
//! between its steps. The saga must still reach its terminal state with stock conserved, the
//! money captured once, and every message's effect applied once.

use lab_psp::{Auto, Scenario};
use serde_json::json;

use lab_test_cluster::{Cluster, Options, Part, line};

async fn an_order_completes_while(part: Part) {
    let mut cluster = Cluster::start(Options {
        scenario: Scenario {
            auto: Auto::Approve,
            // Stretches the saga over several restarts: each webhook waits a little.
            webhook_delay_ms: 300,
            ..Scenario::default()
        },
        ..Options::default()
    })
    .await;
    let before = cluster.inventory("LAB-MUG").await;
    let id = cluster.place(json!([line("LAB-MUG", 2)]), "stripe").await;

    let mut restarted_in = Vec::new();
    for _ in 0..15 {
        let order = cluster.order(&id).await;
        if order["status"] != "Pending" {
            break;
        }
        restarted_in.push(order["saga_state"].as_str().unwrap_or("?").to_owned());
        cluster.restart(part).await;
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    }
    let order = cluster.finished(&id).await;

    assert_eq!(
        order["status"], "Completed",
        "restarted in {restarted_in:?}: {order:#}"
    );
    assert!(
        !restarted_in.is_empty(),
        "the saga finished before any restart"
    );
    let sold = before["sold"].as_i64().unwrap() + 2;
    let after = cluster
        .inventory_reaches("LAB-MUG", |i| i["sold"].as_i64() == Some(sold))
        .await;
    assert_eq!(after["reserved"], 0, "{after:#}");
    assert_eq!(
        after["on_hand"].as_i64().unwrap() + after["sold"].as_i64().unwrap(),
        before["on_hand"].as_i64().unwrap() + before["sold"].as_i64().unwrap(),
        "stock is conserved: {after:#}"
    );
    let payment = cluster.payment_reaches(&id, "captured").await;
    assert_eq!(payment["captured_minor"], 2 * 1_400, "{payment:#}");
    let saga = cluster.saga(&id).await;
    let applied: Vec<&str> = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["ignored"].is_null())
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert_eq!(
        applied,
        [
            "Initiated",
            "StockReserved",
            "PaymentSessionCreated",
            "PaymentAuthorized",
            "Captured",
            "Completed"
        ],
        "restarted in {restarted_in:?}: {saga:#}"
    );
}

#[tokio::test]
async fn an_order_completes_once_while_checkout_keeps_restarting() {
    an_order_completes_while(Part::Checkout).await;
}

#[tokio::test]
async fn an_order_completes_once_while_catalog_keeps_restarting() {
    an_order_completes_while(Part::Catalog).await;
}

#[tokio::test]
async fn an_order_completes_once_while_payments_keeps_restarting() {
    an_order_completes_while(Part::Payments).await;
}
