//! The catalog's "Drive it" demos through HTTP: each answers with evidence and verdict `pass`,
//! and refuses out-of-bounds input with 422.

use serde_json::{Value, json};

use crate::catalog::two;

async fn demo(app: &lab_test_support::TestApp, name: &str, body: Value) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(&format!("/demo/{name}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_race_demo_spreads_writers_over_both_replicas_and_one_wins() {
    let (a, b) = two().await;

    let (status, report) = demo(&a, "race", json!({"n": 20})).await;

    assert_eq!(status, 200);
    assert_eq!(report["verdict"], "pass", "{report:#}");
    let attempts = report["evidence"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 20);
    for replica in [&a.instance_id, &b.instance_id] {
        assert!(
            attempts.iter().any(|x| x["replica"] == **replica),
            "{replica} took part"
        );
    }
}

#[tokio::test]
async fn the_last_unit_demo_sells_the_unit_once_and_restores_it() {
    let (a, _b) = two().await;

    let (_, first) = demo(&a, "last-unit", json!({"n": 25})).await;
    let (_, second) = demo(&a, "last-unit", json!({"n": 25})).await;

    for report in [&first, &second] {
        assert_eq!(report["verdict"], "pass", "{report:#}");
        assert_eq!(report["evidence"]["reserved"], 1);
        assert_eq!(report["evidence"]["on_hand_after"], 0);
    }
}

#[tokio::test]
async fn demo_inputs_out_of_bounds_are_422() {
    let (a, _b) = two().await;

    for (name, body) in [
        ("race", json!({"n": 51})),
        ("last-unit", json!({"n": 1})),
        ("stampede", json!({"n": 0})),
        ("race", json!({})),
    ] {
        let (status, problem) = demo(&a, name, body).await;
        assert_eq!(status, 422, "{name}: {problem:#}");
    }
}
