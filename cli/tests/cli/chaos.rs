//! `lab up` puts a fault proxy on every edge and the control API drives them: every service →
//! dependency edge and the BFF → every instance are listed, the cluster is healthy through them,
//! and a fault applied to a whole target covers its edges and ends by itself.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

#[tokio::test]
async fn every_edge_has_a_fault_proxy_and_a_target_fault_covers_its_edges_until_it_expires() {
    let sandbox = Sandbox::new("edges");
    let _child = sandbox.spawn_logged(sandbox.up_shared());
    let control = sandbox.control_url(Duration::from_secs(60)).await;
    wait_until(
        &control,
        Duration::from_secs(60),
        "all ready through the proxies",
        all_services_ready,
    )
    .await;
    let client = reqwest::Client::new();

    let state = chaos_state(&control).await.expect("GET /chaos");
    let applied = client
        .post(format!("{control}/chaos/faults"))
        .json(&postgres_latency(1))
        .send()
        .await
        .unwrap();
    let applied_status = applied.status();
    let applied_body: Value = applied.json().await.unwrap_or(Value::Null);
    let during = chaos_state(&control).await.expect("GET /chaos");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = chaos_state(&control).await.expect("GET /chaos");
    let refused = client
        .post(format!("{control}/chaos/faults"))
        .json(&postgres_latency(600))
        .send()
        .await
        .unwrap()
        .status();

    let edges: Vec<&str> = state["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for edge in [
        "catalog-1→postgres",
        "catalog-2→redis",
        "orders→rabbitmq",
        "checkout→postgres",
        "bff→catalog-1",
        "bff→catalog-2",
        "bff→redis",
    ] {
        assert!(edges.contains(&edge), "{edge} missing from {edges:?}");
    }
    assert_eq!(applied_status, 201, "{applied_body:#}");
    assert_eq!(during["faults"].as_array().unwrap().len(), 1, "{during:#}");
    assert_eq!(
        after["faults"],
        json!([]),
        "the fault outlived its expiry: {after:#}"
    );
    assert_eq!(refused, 422, "a visitor's fault longer than 120 s");
}

/// A visitor's fault: 20 ms more each way on every edge to PostgreSQL, for `ttl_s`.
fn postgres_latency(ttl_s: u64) -> Value {
    json!({
        "scope": { "type": "target", "name": "postgres" },
        "fault": { "kind": "latency", "ms": 20, "jitter_ms": 0, "direction": "both" },
        "ttl_s": ttl_s,
    })
}
