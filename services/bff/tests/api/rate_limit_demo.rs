//! `POST /api/demo/rate-limit` and the edge through the real BFF: the demo's burst and verdict,
//! its bounds, the route's own limit, replay of its answer, and the local buckets (and
//! `/api/health`) while Redis is down.

use std::time::Duration;

use lab_test_support::{TestApp, TestEnv};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::settings;
use crate::stack::session_cookie;

async fn demo(
    bff: &TestApp,
    cookie: Option<&str>,
    key: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut request = bff.client.post(bff.url("/api/demo/rate-limit")).json(&body);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_burst_faster_than_the_refill_is_allowed_capacity_times_and_passes() {
    let env = TestEnv::builder().start().await;
    let bff = env.spawn(lab_bff::build, settings(&env, &[])).await;

    let response = demo(
        &bff,
        None,
        None,
        json!({"capacity": 5, "refill_per_s": 0.1, "burst": 12}),
    )
    .await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("ratelimit-limit"));
    assert!(session_cookie(&response).is_some());
    let report: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert_eq!(report["mode"], "shared", "{report:#}");
    let results = report["results"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 12, "{report:#}");
    let allowed = results.iter().filter(|r| r["allowed"] == true).count();
    assert!((4..=6).contains(&allowed), "{report:#}");
    assert_eq!(report["allowed"], allowed);
    assert_eq!(results[0]["allowed"], true);
    assert_eq!(results[0]["remaining"], 4);
    assert_eq!(results[11]["allowed"], false);
    assert!(
        results[11]["retry_after_s"]
            .as_u64()
            .is_some_and(|s| s >= 1),
        "{report:#}"
    );
}

#[tokio::test]
async fn a_demo_bucket_out_of_bounds_is_a_422_problem_naming_the_field() {
    let env = TestEnv::builder().start().await;
    let bff = env.spawn(lab_bff::build, settings(&env, &[])).await;

    let mut fields = Vec::new();
    for body in [
        json!({"capacity": 0, "refill_per_s": 1.0, "burst": 5}),
        json!({"capacity": 5, "refill_per_s": 100.0, "burst": 5}),
        json!({"capacity": 5, "refill_per_s": 1.0, "burst": 51}),
    ] {
        let response = demo(&bff, None, None, body).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = response.json().await.unwrap_or(Value::Null);
        fields.push(problem["field"].as_str().unwrap_or_default().to_owned());
    }
    let missing = demo(&bff, None, None, json!({"capacity": 5})).await;
    let (_, openapi) = bff.get_json("/openapi.json").await;

    assert_eq!(fields, ["capacity", "refill_per_s", "burst"]);
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(openapi["paths"]["/api/demo/rate-limit"]["post"].is_object());
}

#[tokio::test]
async fn the_demo_route_has_its_own_limit_and_its_answer_replays_under_a_key() {
    let env = TestEnv::builder().start().await;
    let mut settings = settings(&env, &[]);
    settings.edge.rate_limit.demo = lab_bff::rate_limit::Bucket {
        capacity: 3,
        refill_per_s: 0.01,
    };
    let bff = env.spawn(lab_bff::build, settings).await;
    let cookie = session_cookie(&bff.get("/api/health").await).unwrap_or_default();
    let body = json!({"capacity": 3, "refill_per_s": 0.5, "burst": 4});

    let original = demo(&bff, Some(&cookie), Some("demo-1"), body.clone()).await;
    let original_bytes = original.bytes().await.unwrap_or_default();
    let replayed = demo(&bff, Some(&cookie), Some("demo-1"), body.clone()).await;
    let replayed_header = replayed.headers().get("idempotent-replayed").cloned();
    let replayed_bytes = replayed.bytes().await.unwrap_or_default();
    let third = demo(&bff, Some(&cookie), None, body.clone()).await;
    let refused = demo(&bff, Some(&cookie), None, body).await;
    let metrics = bff.get("/metrics").await.text().await.unwrap_or_default();

    assert!(!original_bytes.is_empty());
    assert_eq!(replayed_bytes, original_bytes);
    assert_eq!(
        replayed_header.as_ref().and_then(|v| v.to_str().ok()),
        Some("true")
    );
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    for line in [
        r#"bff_rate_limit_decisions_total{class="demo",outcome="refused",mode="shared"} 1"#,
        r#"bff_rate_limit_decisions_total{class="demo-bucket",outcome="allowed",mode="shared"} 6"#,
        r#"bff_idempotency_requests_total{outcome="replayed"} 1"#,
        r#"bff_idempotency_requests_total{outcome="kept"} 1"#,
        "bff_rate_limit_local 0",
    ] {
        assert!(metrics.contains(line), "{line} missing: {metrics}");
    }
}

#[tokio::test]
async fn with_redis_down_the_demo_still_limits_locally_and_health_says_so_until_it_returns() {
    let env = TestEnv::builder().with_private_redis().start().await;
    let bff = env.spawn(lab_bff::build, settings(&env, &[])).await;
    let body = json!({"capacity": 4, "refill_per_s": 0.1, "burst": 10});

    env.stop_redis().await;
    let response = demo(&bff, None, None, body.clone()).await;
    let report: Value = response.json().await.unwrap_or(Value::Null);
    let (_, health) = bff.get_json("/api/health").await;

    assert_eq!(report["mode"], "local", "{report:#}");
    assert_eq!(report["verdict"], "pass", "{report:#}");
    assert_eq!(report["allowed"], 4, "{report:#}");
    assert_eq!(health["rate_limit"]["mode"], "local", "{health:#}");
    assert!(
        health["rate_limit"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{health:#}"
    );

    env.start_redis().await;
    let shared = lab_test_support::poll::eventually(Duration::from_secs(20), || async {
        let response = demo(
            &bff,
            None,
            None,
            json!({"capacity": 1, "refill_per_s": 1.0, "burst": 1}),
        )
        .await;
        let report: Value = response.json().await.unwrap_or(Value::Null);
        let (_, health) = bff.get_json("/api/health").await;
        (report["mode"] == "shared" && health["rate_limit"]["mode"] == "shared").then_some(())
    })
    .await;
    assert!(
        shared.is_some(),
        "the BFF never went back to shared buckets"
    );
}

#[tokio::test]
async fn a_demo_shape_configured_on_one_replica_is_the_bucket_another_takes_from() {
    use lab_bff::rate_limit::demo::{DEFAULT_DEMO_BUCKET, DemoBucket};

    let env = TestEnv::builder().start().await;
    let upstream = crate::stack::Upstream::default();
    let settings = crate::stack::edge_settings();
    let (_first_app, first) = crate::stack::spawn_stack_with_edge(&env, &settings, &upstream).await;
    let (_second_app, second) =
        crate::stack::spawn_stack_with_edge(&env, &settings, &upstream).await;
    let shape = DemoBucket::parse(2, 0.01).unwrap_or_else(|p| panic!("{p}"));
    let (first, second) = (first.rate_limiter(), second.rate_limiter());

    let before = second.demo_shape("s:visitor").await;
    first.demo_configure("s:visitor", shape).await;
    let taken = [
        second.demo_take("s:visitor").await,
        first.demo_take("s:visitor").await,
        second.demo_take("s:visitor").await,
    ];
    let burst = first.demo_burst("s:visitor", 51).await;

    assert_eq!(before, DEFAULT_DEMO_BUCKET);
    assert_eq!(second.demo_shape("s:visitor").await, shape.bucket());
    let allowed: Vec<bool> = taken.iter().map(|d| d.allowed).collect();
    assert_eq!(allowed, [true, true, false]);
    assert!(taken.iter().all(|d| d.limit == 2));
    assert_eq!(taken[0].remaining, 1);
    assert!(burst.is_err_and(|p| p.status == 422));
}
