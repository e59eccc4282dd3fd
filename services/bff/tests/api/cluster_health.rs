//! `GET /api/health`: every service instance on its own line, every dependency with reasons.

use lab_test_support::{TestEnv, closed_port_url};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{MIGRATIONS, spawn_bff, spawn_catalog};

fn instances<'a>(health: &'a Value, service: &str) -> Vec<&'a Value> {
    health["services"]
        .as_array()
        .map(|all| all.iter().filter(|i| i["service"] == service).collect())
        .unwrap_or_default()
}

fn instance_at<'a>(health: &'a Value, url: &str) -> &'a Value {
    health["services"]
        .as_array()
        .and_then(|all| all.iter().find(|i| i["url"] == url))
        .unwrap_or(&Value::Null)
}

fn dependency<'a>(health: &'a Value, name: &str) -> &'a Value {
    health["infrastructure"]
        .as_array()
        .and_then(|all| all.iter().find(|d| d["name"] == name))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn each_catalog_instance_shows_separately_and_one_not_listening_shows_down_with_a_reason() {
    let env = TestEnv::builder().with_database(MIGRATIONS).start().await;
    let first = spawn_catalog(&env, 1).await;
    let second = spawn_catalog(&env, 2).await;
    first.wait_ready().await;
    second.wait_ready().await;
    let silent = closed_port_url("http");
    let urls = format!("{},{},{silent}", first.base_url, second.base_url);
    let bff = spawn_bff(&env, &[("catalog", urls)]).await;

    let (status, health) = bff.get_json("/api/health").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(instances(&health, "catalog").len(), 3, "{health:#}");
    for app in [&first, &second] {
        let seen = instance_at(&health, &app.base_url);
        assert_eq!(seen["instance_id"], app.instance_id.as_str(), "{health:#}");
        assert_eq!(seen["status"], "ready", "{health:#}");
        assert!(seen["latency_ms"].as_f64().is_some(), "{health:#}");
    }
    assert_ne!(first.instance_id, second.instance_id);
    let down = instance_at(&health, &silent);
    assert_eq!(down["status"], "down", "{health:#}");
    assert!(down["instance_id"].is_null(), "{health:#}");
    assert!(
        down["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not listening")),
        "{health:#}"
    );
    assert_eq!(health["status"], "degraded");
    assert_eq!(health["bff"], bff.instance_id.as_str());
    for name in ["postgres", "redis", "rabbitmq"] {
        let seen = dependency(&health, name);
        assert_eq!(seen["status"], "up", "{health:#}");
        let observers = seen["observers"].as_array().cloned().unwrap_or_default();
        for app in [&first, &second] {
            assert!(
                observers.contains(&app.instance_id.as_str().into()),
                "{health:#}"
            );
        }
    }
}

#[tokio::test]
async fn redis_stopping_shows_down_with_reasons_everywhere_and_its_return_heals_all_without_restarts()
 {
    let env = TestEnv::builder()
        .with_database(MIGRATIONS)
        .with_private_redis()
        .start()
        .await;
    let catalog = spawn_catalog(&env, 1).await;
    let bff = spawn_bff(&env, &[("catalog", catalog.base_url.clone())]).await;
    catalog.wait_ready().await;
    bff.wait_json("/api/health", |h| h["status"] == "healthy")
        .await;

    env.stop_redis().await;

    let catalog_id = catalog.instance_id.as_str();
    let bff_id = bff.instance_id.as_str();
    let health = bff
        .wait_json("/api/health", |h| {
            let reasons = &dependency(h, "redis")["reasons"];
            reasons[catalog_id].is_string() && reasons[bff_id].is_string()
        })
        .await;
    let redis = dependency(&health, "redis");
    assert_eq!(redis["status"], "down", "{health:#}");
    for observer in [catalog_id, bff_id] {
        let reason = redis["reasons"][observer].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{observer}: {health:#}");
    }
    assert_eq!(
        instance_at(&health, &catalog.base_url)["status"],
        "degraded"
    );
    let (status, readyz) = catalog.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{readyz:#}");
    assert_eq!(readyz["status"], "degraded", "{readyz:#}");

    env.start_redis().await;

    let health = bff
        .wait_json("/api/health", |h| h["status"] == "healthy")
        .await;
    assert_eq!(dependency(&health, "redis")["status"], "up");
    assert_eq!(
        instance_at(&health, &catalog.base_url)["instance_id"],
        catalog_id
    );
    catalog.wait_ready().await;
}

#[tokio::test]
async fn openbao_shows_up_when_it_answers_and_down_with_a_reason_when_it_does_not() {
    lab_test_support::require_bao!();
    let env = TestEnv::builder().with_vault().start().await;
    let mut settings = crate::helpers::settings(&env, &[]);
    settings.vault_addr = Some(env.vault().addr.clone());
    let bff = env.spawn(lab_bff::build, settings.clone()).await;
    settings.vault_addr = Some(closed_port_url("http"));
    let blind = env.spawn(lab_bff::build, settings).await;

    let (_, health) = bff.get_json("/api/health").await;
    let (_, blind_health) = blind.get_json("/api/health").await;

    assert_eq!(dependency(&health, "openbao")["status"], "up", "{health:#}");
    let down = dependency(&blind_health, "openbao");
    assert_eq!(down["status"], "down", "{blind_health:#}");
    let reason = down["reasons"][blind.instance_id.as_str()]
        .as_str()
        .unwrap_or_default();
    assert!(!reason.is_empty(), "{blind_health:#}");
}
