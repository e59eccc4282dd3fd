//! `POST /api/demo/saga` against the whole checkout path (catalog, orders, checkout, payments and
//! the sandbox PSP in-process), the buyer's choice made on the PSP by the demo itself.

use lab_test_cluster::{Cluster, Options};
use serde_json::{Value, json};

use crate::helpers::{spawn_app, spawn_bff};

/// The cluster with a buyer who waits for the demo to choose.
async fn cluster() -> Cluster {
    Cluster::start(Options {
        scenario: lab_psp::Scenario::default(),
        ..Options::default()
    })
    .await
}

async fn run(app: &lab_test_support::TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/demo/saga"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_saga_demo_completes_an_approved_order_and_cancels_a_declined_one() {
    let cluster = cluster().await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let (approved_status, approved) = run(&bff, json!({ "scenario": "success" })).await;
    let (declined_status, declined) = run(&bff, json!({ "scenario": "payment-declined" })).await;

    assert_eq!(approved_status, 200, "{approved:#}");
    assert_eq!(approved["verdict"], "pass", "{approved:#}");
    assert_eq!(approved["evidence"]["order"]["status"], "Completed");
    assert_eq!(approved["evidence"]["payment"]["state"], "captured");
    let history: Vec<&str> = approved["evidence"]["order"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["to"].as_str())
        .collect();
    assert!(history.ends_with(&["Completed"]), "{history:?}");
    assert_eq!(declined_status, 200, "{declined:#}");
    assert_eq!(declined["verdict"], "pass", "{declined:#}");
    assert_eq!(declined["evidence"]["order"]["status"], "Cancelled");
    assert_eq!(
        declined["evidence"]["stock_after"]["reserved"],
        declined["evidence"]["stock_before"]["reserved"]
    );
    let steps: Vec<&str> = declined["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        steps.contains(&"the buyer chose to decline on the PSP"),
        "{steps:?}"
    );
}

#[tokio::test]
async fn the_last_unit_race_completes_one_order_and_rejects_the_other() {
    let cluster = cluster().await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let (status, report) = run(&bff, json!({ "scenario": "last-unit-race" })).await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    let mut statuses: Vec<&str> = report["evidence"]["orders"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["status"].as_str())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["Completed", "Rejected"]);
    assert_eq!(report["evidence"]["stock_after"]["on_hand"], 0);
}

#[tokio::test]
async fn an_unknown_saga_scenario_or_provider_is_a_422() {
    let app = spawn_app().await;

    let (scenario_status, scenario) = run(&app, json!({ "scenario": "teleport" })).await;
    let (provider_status, provider) =
        run(&app, json!({ "scenario": "success", "provider": "cash" })).await;

    assert_eq!(scenario_status, 422, "{scenario:#}");
    assert_eq!(scenario["field"], "scenario");
    assert_eq!(provider_status, 422, "{provider:#}");
    assert_eq!(provider["field"], "provider");
}

#[tokio::test]
async fn the_same_order_sent_ten_times_with_one_key_is_one_order_that_completes() {
    let cluster = cluster().await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let (status, report) = run(&bff, json!({ "scenario": "idempotent-retry" })).await;

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert_eq!(report["evidence"]["order_ids"].as_array().unwrap().len(), 1);
    assert_eq!(report["evidence"]["order"]["status"], "Completed");
}

#[tokio::test]
async fn background_journeys_run_in_turn_and_every_viewer_sees_their_outcomes() {
    let cluster = cluster().await;
    let settings = lab_bff::Settings {
        journeys: lab_bff::journeys::JourneySettings {
            enabled: true,
            every_s: 1,
        },
        ..crate::helpers::settings(&cluster.env, &cluster.upstreams())
    };
    let bff = cluster.env.spawn(lab_bff::build, settings).await;
    let mut live =
        lab_test_support::SseStream::connect(&bff.client, &bff.url("/api/events?topics=demo"), &[])
            .await;

    let mut outcomes = std::collections::BTreeMap::new();
    while outcomes.len() < 3 {
        let Some(event) = live
            .until(std::time::Duration::from_secs(60), |e| {
                e.data["data"]["journey"].is_string()
            })
            .await
        else {
            break;
        };
        outcomes.insert(
            event.data["data"]["journey"].as_str().unwrap().to_owned(),
            event.data["data"]["outcome"].clone(),
        );
    }

    let names: Vec<&String> = outcomes.keys().collect();
    assert_eq!(
        names,
        ["idempotent-retry", "occ-race", "place-order"],
        "{outcomes:#?}"
    );
    for (journey, outcome) in &outcomes {
        assert_eq!(outcome["verdict"], "pass", "{journey}: {outcome:#}");
    }
}

#[tokio::test]
async fn the_revocation_demo_sees_catalog_and_orders_refuse_a_logged_out_token_within_a_second() {
    lab_test_support::require_bao!();
    let cluster = Cluster::start(Options {
        identity: true,
        ..Options::default()
    })
    .await;
    let bff = spawn_bff(&cluster.env, &cluster.upstreams()).await;

    let response = bff
        .client
        .post(bff.url("/api/demo/jti-revocation"))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let report: Value = response.json().await.unwrap();

    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    for service in ["catalog", "orders"] {
        let ms = report["evidence"]["refused_after_ms"][service].as_f64();
        assert!(ms.is_some_and(|ms| ms <= 1_000.0), "{service}: {report:#}");
    }
    let text = report.to_string();
    assert!(
        !text.contains("eyJ"),
        "a token leaked into the report: {text}"
    );
}
