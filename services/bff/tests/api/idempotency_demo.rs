//! `POST /api/demo/idempotency` against the whole checkout path: one order sent again and again
//! with one key through the BFF's edge replay is one order, as orders' own API confirms.

use lab_test_cluster::{Cluster, Options};
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_bff};

async fn run(app: &lab_test_support::TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/demo/idempotency"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn one_key_sent_eleven_times_through_the_edge_is_one_order_in_orders() {
    let cluster = Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        ..Options::default()
    })
    .await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let (status, report) = run(&bff, json!({})).await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    let evidence = &report["evidence"];
    let attempts = evidence["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 10);
    let order_ids = evidence["order_ids"].as_array().unwrap();
    assert_eq!(order_ids.len(), 1, "{evidence:#}");
    let order_id = order_ids[0].as_str().unwrap();
    // The later requests, one after another, are each the edge's replay of the first answer.
    for attempt in attempts
        .iter()
        .filter(|a| a["phase"] == "one-after-another")
    {
        assert_eq!(attempt["status"], 202, "{attempt}");
        assert_eq!(attempt["replayed"], true, "{attempt}");
        assert_eq!(attempt["order_id"], order_id, "{attempt}");
    }
    // At once: exactly one ran; the rest were in flight (409) or replays of it.
    let first_answers = attempts
        .iter()
        .filter(|a| a["phase"] == "at-once" && a["status"] == 202 && a["replayed"] == false)
        .count();
    assert_eq!(first_answers, 1, "{evidence:#}");
    assert_eq!(evidence["other_body"]["status"], 422);
    // Orders' own records: one order in the whole (fresh) cluster, with one claim for its key.
    let (_, invariants) = cluster.orders.get_json("/invariants").await;
    let total: i64 = invariants["by_status"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(Value::as_i64)
        .sum();
    assert_eq!(total, 1, "{invariants:#}");
    assert_eq!(
        invariants["one_claim_per_key"]["held"], true,
        "{invariants:#}"
    );
    assert_eq!(evidence["orders_says"], order_id);
}

#[tokio::test]
async fn an_idempotency_demo_out_of_bounds_is_a_422() {
    let app = spawn_app().await;

    let (too_many, many) = run(&app, json!({ "parallel": 51 })).await;
    let (none, zero) = run(&app, json!({ "sequential": 0 })).await;
    let (cash, provider) = run(&app, json!({ "provider": "cash" })).await;

    assert_eq!(too_many, 422, "{many:#}");
    assert_eq!(many["field"], "parallel");
    assert_eq!(none, 422, "{zero:#}");
    assert_eq!(zero["field"], "sequential");
    assert_eq!(cash, 422, "{provider:#}");
    assert_eq!(provider["field"], "provider");
}
