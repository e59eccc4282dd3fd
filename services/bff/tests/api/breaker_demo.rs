//! `POST /api/demo/circuit-breaker` in front of two real catalog replicas: a failing catalog opens
//! the breakers and later requests fail fast; recovered and reset, every request answers 200;
//! bypassed, every request pays the sick upstream's latency.

use lab_test_support::TestEnv;
use serde_json::{Value, json};

use crate::helpers::{MIGRATIONS, spawn_bff, spawn_catalog};

async fn demo(bff: &lab_test_support::TestApp, body: Value) -> (u16, Value) {
    let response = bff
        .client
        .post(bff.url("/api/demo/circuit-breaker"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The BFF in front of two catalog replicas; the replicas are returned to keep them serving.
async fn catalog_pair() -> (
    TestEnv,
    lab_test_support::TestApp,
    [lab_test_support::TestApp; 2],
) {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let one = spawn_catalog(&env, 1).await;
    let two = spawn_catalog(&env, 2).await;
    let upstreams = [("catalog", format!("{},{}", one.base_url, two.base_url))];
    let bff = spawn_bff(&env, &upstreams).await;
    (env, bff, [one, two])
}

#[tokio::test]
async fn a_failing_catalog_opens_the_breakers_and_after_a_reset_a_healthy_one_answers_every_request()
 {
    let (_env, bff, _replicas) = catalog_pair().await;
    let mut live = lab_test_support::SseStream::connect(
        &bff.client,
        &bff.url("/api/events?topics=breaker,console"),
        &[],
    )
    .await;

    let (failing_status, failing) =
        demo(&bff, json!({ "upstream_failing": true, "requests": 12 })).await;
    let (healthy_status, healthy) = demo(
        &bff,
        json!({ "upstream_failing": false, "reset": true, "requests": 6 }),
    )
    .await;

    assert_eq!(failing_status, 200, "{failing:#}");
    assert_eq!(failing["verdict"], "pass", "{failing:#}");
    let requests = failing["evidence"]["requests"].as_array().unwrap();
    let first = &requests[0];
    assert_eq!(first["status"], 503, "{first}");
    assert_eq!(
        first["circuit_open"], false,
        "the first request met the sick upstream itself"
    );
    let last = requests.last().unwrap();
    assert_eq!(last["circuit_open"], true, "{last}");
    assert!(last["retry_after"].is_string(), "{last}");
    let states: Vec<&str> = failing["evidence"]["breakers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|b| b["state"].as_str())
        .collect();
    assert_eq!(states.len(), 2, "one breaker per replica: {states:?}");
    assert!(states.iter().all(|s| *s == "open"), "{states:?}");
    assert_eq!(healthy_status, 200, "{healthy:#}");
    assert_eq!(healthy["verdict"], "pass", "{healthy:#}");
    let replicas: std::collections::BTreeSet<&str> = healthy["evidence"]["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["replica"].as_str())
        .collect();
    assert_eq!(replicas.len(), 2, "both replicas served: {replicas:?}");
    let opened = live
        .until(std::time::Duration::from_secs(10), |e| {
            e.event == "breaker"
                && e.data["data"]["kind"] == "breaker_changed"
                && e.data["data"]["to"] == "open"
        })
        .await;
    assert!(opened.is_some(), "no breaker event reached the live stream");
}

#[tokio::test]
async fn bypassing_the_breaker_every_request_waits_for_the_sick_catalog() {
    let (_env, bff, _replicas) = catalog_pair().await;

    let (status, report) = demo(
        &bff,
        json!({ "upstream_failing": true, "bypass": true, "requests": 4 }),
    )
    .await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    for request in report["evidence"]["requests"].as_array().unwrap() {
        assert_eq!(request["status"], 503, "{request}");
        assert!(request["ms"].as_f64().unwrap() >= 200.0, "{request}");
    }
}

#[tokio::test]
async fn a_request_count_out_of_bounds_is_a_422() {
    let (_env, bff, _replicas) = catalog_pair().await;

    let (none, none_body) = demo(&bff, json!({ "requests": 0 })).await;
    let (many, _) = demo(&bff, json!({ "requests": 51 })).await;

    assert_eq!(none, 422, "{none_body:#}");
    assert_eq!(none_body["field"], "requests");
    assert_eq!(many, 422);
}
