//! `/api/chaos` and its faults on the BFF → service edges: shared by two BFF replicas through
//! Redis, applied to every replica of the service, removed by hand or ending by themselves, bad
//! requests refused with 422.

use std::time::Duration;

use lab_test_support::{SseStream, TestApp, TestEnv, eventually};
use serde_json::{Value, json};

use crate::stub::{Mode, Stub};

const WAIT: Duration = Duration::from_secs(10);

/// BFF replica `replica` in front of `catalog`, its chaos bucket roomy enough for a test.
async fn replica(env: &TestEnv, replica: u16, catalog: &str) -> TestApp {
    let mut settings = crate::helpers::settings(env, &[("catalog", catalog.to_owned())]);
    settings.http = env.http(replica);
    settings.edge.rate_limit.chaos.capacity = 100;
    settings.edge.rate_limit.chaos.refill_per_s = 10.0;
    env.spawn(lab_bff::build, settings).await
}

async fn post_fault(bff: &TestApp, body: Value) -> (u16, Value) {
    let response = bff
        .client
        .post(bff.url("/api/chaos/faults"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn read_status(bff: &TestApp) -> u16 {
    bff.get("/api/products").await.status().as_u16()
}

#[tokio::test]
async fn a_fault_set_on_one_replica_fails_the_service_through_both_until_it_is_removed() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let one = replica(&env, 1, &stub.url).await;
    let two = replica(&env, 2, &stub.url).await;
    assert_eq!(read_status(&two).await, 200);

    let (created, fault) = post_fault(
        &one,
        json!({ "target": "catalog", "status": 503, "duration_s": 60 }),
    )
    .await;
    let failing = eventually(WAIT, || async {
        (read_status(&two).await == 503).then_some(())
    })
    .await;
    let (_, state) = two.get_json("/api/chaos").await;
    let problem: Value = two.get("/api/products").await.json().await.unwrap();
    let id = fault["id"].as_str().unwrap().to_owned();
    let removed = two
        .client
        .delete(two.url(&format!("/api/chaos/faults/{id}")))
        .send()
        .await
        .unwrap()
        .status();
    let healed = eventually(WAIT, || async {
        (read_status(&one).await == 200).then_some(())
    })
    .await;

    assert_eq!(created, 201, "{fault:#}");
    assert!(
        failing.is_some(),
        "the other replica never applied the fault"
    );
    assert_eq!(
        problem["type"], "urn:lab:problem:injected-fault",
        "{problem:#}"
    );
    assert_eq!(state["faults"][0]["id"], id.as_str(), "{state:#}");
    let left = state["faults"][0]["expires_in_ms"].as_u64().unwrap();
    assert!(left > 0 && left <= 60_000, "{left}");
    assert_eq!(removed, 204);
    assert!(healed.is_some(), "the fault outlived its removal");
}

#[tokio::test]
async fn a_fault_ends_by_itself_and_every_viewer_is_told() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = replica(&env, 1, &stub.url).await;
    let mut console =
        SseStream::connect(&bff.client, &bff.url("/api/events?topics=console"), &[]).await;

    let (created, _) = post_fault(
        &bff,
        json!({ "target": "catalog", "latency_ms": 50, "status": 500, "probability": 1.0, "duration_s": 1 }),
    )
    .await;
    let expired = console
        .until(WAIT, |e| {
            e.data["data"]["text"]
                .as_str()
                .is_some_and(|t| t.contains("fault on catalog expired"))
        })
        .await;
    let (_, state) = bff.get_json("/api/chaos").await;

    assert_eq!(created, 201);
    assert!(expired.is_some(), "nobody was told the fault ended");
    assert_eq!(read_status(&bff).await, 200);
    assert_eq!(state["faults"], json!([]), "{state:#}");
}

#[tokio::test]
async fn faults_out_of_bounds_are_422_naming_the_field() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = replica(&env, 1, &stub.url).await;

    let cases = [
        (
            json!({ "target": "mainframe", "status": 503, "duration_s": 10 }),
            "target",
        ),
        (
            json!({ "target": "catalog", "status": 503, "duration_s": 0 }),
            "duration_s",
        ),
        (
            json!({ "target": "catalog", "status": 503, "duration_s": 121 }),
            "duration_s",
        ),
        (
            json!({ "target": "catalog", "status": 404, "duration_s": 10 }),
            "status",
        ),
        (
            json!({ "target": "catalog", "status": 503, "probability": 2.0, "duration_s": 10 }),
            "probability",
        ),
        (
            json!({ "target": "catalog", "latency_ms": 20_000, "duration_s": 10 }),
            "latency_ms",
        ),
        (json!({ "target": "catalog", "duration_s": 10 }), "status"),
    ];
    for (body, field) in cases {
        let (status, problem) = post_fault(&bff, body.clone()).await;
        assert_eq!(status, 422, "{body}: {problem:#}");
        assert_eq!(problem["field"], field, "{body}: {problem:#}");
    }
    let (status, _) = post_fault(
        &bff,
        json!({ "target": "catalog", "duration_s": 5, "colour": "red" }),
    )
    .await;
    assert_eq!(status, 422, "an unknown field");
    let (_, state) = bff.get_json("/api/chaos").await;
    assert_eq!(state["faults"], json!([]), "nothing was applied: {state:#}");
}

#[tokio::test]
async fn without_an_apphost_only_http_faults_are_offered_and_tcp_or_process_ones_are_422() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = replica(&env, 1, &stub.url).await;

    let (_, state) = bff.get_json("/api/chaos").await;
    let (tcp, tcp_problem) = post_fault(
        &bff,
        json!({ "layer": "tcp", "target": "postgres", "fault": { "kind": "blackhole" }, "duration_s": 10 }),
    )
    .await;
    let (process, process_problem) = post_fault(
        &bff,
        json!({ "layer": "process", "target": "catalog-1", "action": "pause", "duration_s": 10 }),
    )
    .await;
    let (mixed, mixed_problem) = post_fault(
        &bff,
        json!({ "target": "catalog", "status": 503, "action": "kill", "duration_s": 10 }),
    )
    .await;

    assert_eq!(state["layers"], json!(["http"]), "{state:#}");
    assert_eq!(state["apphost"], Value::Null);
    assert!(
        state["not_here_reason"]
            .as_str()
            .is_some_and(|r| r.contains("without an apphost")),
        "{state:#}"
    );
    assert_eq!(tcp, 422, "{tcp_problem:#}");
    assert_eq!(tcp_problem["field"], "layer", "{tcp_problem:#}");
    assert_eq!(process, 422, "{process_problem:#}");
    assert_eq!(
        mixed, 422,
        "an HTTP fault with a process action: {mixed_problem:#}"
    );
    let (_, after) = bff.get_json("/api/chaos").await;
    assert_eq!(after["faults"], json!([]), "{after:#}");
}
