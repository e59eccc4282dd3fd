//! The demos that act with the BFF's narrow `demo` token (identity's client credentials):
//! `POST /api/demo/outbox` (orders' relay paused for a bounded time),
//! `POST /api/demo/vault-rotation` (orders' leased login rotated under load) and the saga's
//! `payment-expired` scenario (a payment window of seconds, only with that token), against the whole
//! cluster with identity and OpenBao; their facts read back from orders' own API.

use lab_test_cluster::{Cluster, Options};
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_bff};

async fn run(app: &lab_test_support::TestApp, demo: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/demo/{demo}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_outbox_demo_shows_the_event_waiting_then_relayed_and_the_order_completing() {
    lab_test_support::require_bao!();
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        identity: true,
        ..Options::default()
    })
    .await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let (status, report) = run(&bff, "outbox", json!({ "pause_s": 10 })).await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    let evidence = &report["evidence"];
    assert!(
        evidence["outbox_while_paused"]["pending"].as_i64().unwrap() >= 1,
        "{evidence:#}"
    );
    assert_eq!(evidence["outbox_while_paused"]["paused"], true);
    assert_eq!(evidence["outbox_after"]["pending"], 0);
    let order_id = evidence["order"]["order_id"].as_str().unwrap();
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    let unheard = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "checkout has not heard of the order yet")
        .unwrap_or_else(|| panic!("{steps:?}"));
    assert_eq!(unheard["detail"]["status"], 404);
    // Orders' own view: the order completed, the relay is running again and its outbox drained.
    let (_, invariants) = cluster
        .orders
        .get_json(&format!("/invariants?statuses_of={order_id}"))
        .await;
    assert_eq!(
        invariants["statuses_of"][order_id], "Completed",
        "{invariants:#}"
    );
    assert_eq!(
        invariants["messaging"]["outbox"]["held"], true,
        "{invariants:#}"
    );
    let checkout_saga = cluster
        .checkout()
        .get_json(&format!("/sagas/{order_id}"))
        .await
        .1;
    assert_eq!(checkout_saga["state"], "Completed", "{checkout_saga:#}");
}

#[tokio::test]
async fn the_vault_rotation_demo_changes_orders_lease_and_fails_no_request() {
    lab_test_support::require_bao!();
    let cluster = Cluster::start(Options {
        identity: true,
        leased_orders: true,
        ..Options::default()
    })
    .await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;
    let (_, before) = cluster.orders.get_json("/credentials").await;

    let (status, report) = run(&bff, "vault-rotation", json!({ "workers": 4 })).await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    let evidence = &report["evidence"];
    assert_eq!(evidence["requests"]["failed"], 0, "{evidence:#}");
    assert!(evidence["requests"]["sent"].as_u64().unwrap() > 0);
    assert_ne!(evidence["old_lease"], evidence["new_lease"]);
    // Orders' own account of it: one more rotation, to the lease the demo reports.
    let (_, after) = cluster.orders.get_json("/credentials").await;
    assert_eq!(
        after["rotations"].as_u64().unwrap(),
        before["rotations"].as_u64().unwrap() + 1,
        "{after:#}"
    );
    assert_eq!(after["lease_id"], evidence["new_lease"]);
    assert_eq!(before["lease_id"], evidence["old_lease"]);
    assert_eq!(after["last_rotation"]["revoked"], true, "{after:#}");
    // The logins' names never reach the visitor.
    assert_eq!(evidence["rotation"]["old_user"], "(hidden)");
    assert_eq!(evidence["rotation"]["new_user"], "(hidden)");
}

#[tokio::test]
async fn the_outbox_and_vault_rotation_demos_refuse_out_of_bounds_input_with_422() {
    let app = spawn_app().await;

    let (long, long_body) = run(&app, "outbox", json!({ "pause_s": 31 })).await;
    let (short, _) = run(&app, "outbox", json!({ "pause_s": 1 })).await;
    let (many, many_body) = run(&app, "vault-rotation", json!({ "workers": 9 })).await;
    let (none, _) = run(&app, "vault-rotation", json!({ "workers": 0 })).await;

    assert_eq!(long, 422, "{long_body:#}");
    assert_eq!(long_body["field"], "pause_s");
    assert_eq!(short, 422);
    assert_eq!(many, 422, "{many_body:#}");
    assert_eq!(many_body["field"], "workers");
    assert_eq!(none, 422);
}

#[tokio::test]
async fn an_unpaid_order_with_a_short_window_is_cancelled_with_its_stock_released() {
    lab_test_support::require_bao!();
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        identity: true,
        ..Options::default()
    })
    .await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let (status, report) = run(&bff, "saga", json!({ "scenario": "payment-expired" })).await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    let evidence = &report["evidence"];
    assert_eq!(evidence["order"]["status"], "Cancelled");
    assert_eq!(
        evidence["stock_after"]["reserved"],
        evidence["stock_before"]["reserved"]
    );
    let order_id = evidence["order"]["order_id"].as_str().unwrap();
    // Checkout's own record: the payment deadline fired on PaymentSessionCreated.
    let (_, saga) = cluster
        .checkout()
        .get_json(&format!("/sagas/{order_id}"))
        .await;
    assert_eq!(saga["state"], "Cancelled", "{saga:#}");
    let timed_out = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["from"] == "PaymentSessionCreated" && t["to"] == "Cancelled");
    assert!(timed_out, "{saga:#}");
    // Payments never captured it.
    let payment = cluster.payment(order_id).await;
    assert_ne!(payment["state"], "captured", "{payment:#}");
}

#[tokio::test]
async fn a_payment_window_from_anyone_but_the_demo_is_refused() {
    let app = spawn_app().await;

    let (wrong_scenario, body) = run(
        &app,
        "saga",
        json!({ "scenario": "success", "payment_window_s": 5 }),
    )
    .await;
    let (too_long, _) = run(
        &app,
        "saga",
        json!({ "scenario": "payment-expired", "payment_window_s": 31 }),
    )
    .await;

    assert_eq!(wrong_scenario, 422, "{body:#}");
    assert_eq!(body["field"], "payment_window_s");
    assert_eq!(too_long, 422);
}
