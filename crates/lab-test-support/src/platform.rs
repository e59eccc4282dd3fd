//! The platform surface every service shares (`/livez`, `/readyz`, `/metrics`, `/openapi.json`,
//! ids, problem+json), checked the same way for all seven: each service's test binary expands
//! [`platform_tests!`](crate::platform_tests) with its own `spawn_app`, and the checks live here
//! once.

use lab_http::{PROBLEM_JSON, X_INSTANCE_ID, X_REQUEST_ID};
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::{TestApp, eventually};

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

/// `/livez` answers 200 while the process runs.
pub async fn livez_answers_200(app: &TestApp) {
    let response = app.get("/livez").await;

    assert_eq!(response.status(), StatusCode::OK);
}

/// `/readyz` lists exactly `dependencies`, each `up` with a latency, and answers 200 `ready`.
pub async fn readyz_lists_every_dependency_up(app: &TestApp, dependencies: &[&str]) {
    let body = app.wait_ready().await;
    let (status, body_now) = app.get_json("/readyz").await;

    assert_eq!(status, StatusCode::OK, "{body_now:#}");
    assert_eq!(body["instance"], app.instance_id.as_str());
    let checks = body["checks"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(names, dependencies, "{body:#}");
    for check in &checks {
        assert_eq!(check["status"], "up", "{check:#}");
        assert!(
            check["latency_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
            "{check:#}"
        );
    }
}

/// `/metrics` is Prometheus text counting requests per method, route and status.
pub async fn metrics_count_requests_by_route_and_status(app: &TestApp) {
    for _ in 0..3 {
        app.get("/livez").await;
    }
    app.get("/no-such-route").await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(header(&response, CONTENT_TYPE.as_str()).starts_with("text/plain"));
    let text = response.text().await.unwrap_or_default();
    assert!(text.contains("# TYPE http_requests counter"), "{text}");
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/livez",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}

/// `/openapi.json` is a valid OpenAPI 3 document listing the platform routes and `extra_paths`.
pub async fn openapi_lists_the_routes(app: &TestApp, extra_paths: &[&str]) {
    let response = app.get("/openapi.json").await;

    assert_eq!(response.status(), StatusCode::OK);
    let doc: Value = response.json().await.unwrap_or(Value::Null);
    if let Err(e) = serde_json::from_value::<utoipa::openapi::OpenApi>(doc.clone()) {
        panic!("not an OpenAPI document ({e}): {doc:#}");
    }
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc:#}"
    );
    for path in ["/livez", "/readyz", "/metrics"].iter().chain(extra_paths) {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} missing: {doc:#}"
        );
    }
}

/// Every response, success or error, carries `X-Instance-Id` (`<service>-<replica>-<hex>`) and
/// `X-Request-Id`, the caller's when it sent one.
pub async fn every_response_carries_both_ids(app: &TestApp, service: &str) {
    for path in ["/livez", "/readyz", "/metrics", "/openapi.json", "/nope"] {
        let response = app
            .client
            .get(app.url(path))
            .header(X_REQUEST_ID.as_str(), "test-req-42")
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let anonymous = app.get(path).await;

        let instance = header(&response, X_INSTANCE_ID.as_str());
        let parts: Vec<&str> = instance.splitn(3, '-').collect();
        assert_eq!(parts.len(), 3, "{path}: instance id {instance:?}");
        assert_eq!(parts[0], service, "{path}: instance id {instance:?}");
        assert!(parts[1].parse::<u16>().is_ok(), "{path}: {instance:?}");
        assert!(
            !parts[2].is_empty() && parts[2].chars().all(|c| c.is_ascii_hexdigit()),
            "{path}: {instance:?}"
        );
        assert_eq!(instance, app.instance_id);
        assert_eq!(
            header(&response, X_REQUEST_ID.as_str()),
            "test-req-42",
            "{path}"
        );
        assert!(
            !header(&anonymous, X_REQUEST_ID.as_str()).is_empty(),
            "{path}"
        );
        assert_ne!(header(&anonymous, X_REQUEST_ID.as_str()), "test-req-42");
    }
}

/// An unknown route is a 404 `application/problem+json`.
pub async fn an_unknown_route_is_a_404_problem(app: &TestApp) {
    let response = app.get("/definitely/not/here").await;

    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&response, CONTENT_TYPE.as_str()), PROBLEM_JSON);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["status"], 404);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body:#}"
    );
}

/// A known route with the wrong method is a 405 problem.
pub async fn a_wrong_method_is_a_405_problem(app: &TestApp) {
    let response = app
        .client
        .delete(app.url("/livez"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DELETE /livez: {e}"));

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&response, CONTENT_TYPE.as_str()), PROBLEM_JSON);
    assert_eq!(header(&response, X_INSTANCE_ID.as_str()), app.instance_id);
    assert!(!header(&response, X_REQUEST_ID.as_str()).is_empty());
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["status"], 405);
}

/// A request in flight when shutdown starts still completes; new connections are refused.
/// `spawn_with_routes` starts the service with the given test-only routes added.
pub async fn a_request_in_flight_completes_during_shutdown<F, Fut>(spawn_with_routes: F)
where
    F: FnOnce(axum::Router) -> Fut,
    Fut: std::future::Future<Output = TestApp>,
{
    let started = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let (s, r) = (started.clone(), release.clone());
    let slow = axum::Router::new().route(
        "/__test/slow",
        axum::routing::get(move || async move {
            s.notify_one();
            r.notified().await;
            "done"
        }),
    );
    let app = spawn_with_routes(slow).await;
    let in_flight = tokio::spawn(app.client.get(app.url("/__test/slow")).send());
    started.notified().await;

    app.shutdown_token().cancel();

    let addr = app.addr;
    let refused = eventually(Duration::from_secs(5), || async move {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    assert!(
        refused.is_some(),
        "still accepting connections after shutdown began"
    );
    release.notify_one();
    let response = in_flight
        .await
        .unwrap_or_else(|e| panic!("request task: {e}"))
        .unwrap_or_else(|e| panic!("the in-flight request failed: {e}"));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap_or_default(), "done");
    let served = app.shutdown().await;
    assert!(served.is_ok(), "{served:?}");
}

/// The platform tests of one service, each a sentence, each with its own app and environment.
///
/// ```ignore
/// lab_test_support::platform_tests! {
///     spawn: crate::helpers::spawn_app,
///     spawn_with_routes: crate::helpers::spawn_app_with_routes,
///     service: "catalog",
///     dependencies: ["postgres", "redis", "rabbitmq"],
///     paths: [],
/// }
/// ```
#[macro_export]
macro_rules! platform_tests {
    (
        spawn: $spawn:path,
        spawn_with_routes: $spawn_with:path,
        service: $service:expr,
        dependencies: [$($dep:expr),* $(,)?],
        paths: [$($path:expr),* $(,)?] $(,)?
    ) => {
        #[::tokio::test]
        async fn a_request_in_flight_when_shutdown_starts_still_completes() {
            $crate::platform::a_request_in_flight_completes_during_shutdown($spawn_with).await;
        }

        #[::tokio::test]
        async fn livez_answers_200_while_the_process_runs() {
            let app = $spawn().await;
            $crate::platform::livez_answers_200(&app).await;
        }

        #[::tokio::test]
        async fn readyz_lists_each_dependency_up_with_its_latency() {
            let app = $spawn().await;
            $crate::platform::readyz_lists_every_dependency_up(&app, &[$($dep),*]).await;
        }

        #[::tokio::test]
        async fn metrics_count_requests_per_route_and_status_in_prometheus_text() {
            let app = $spawn().await;
            $crate::platform::metrics_count_requests_by_route_and_status(&app).await;
        }

        #[::tokio::test]
        async fn openapi_json_is_a_valid_document_listing_the_routes() {
            let app = $spawn().await;
            $crate::platform::openapi_lists_the_routes(&app, &[$($path),*]).await;
        }

        #[::tokio::test]
        async fn every_response_carries_the_instance_id_and_the_callers_request_id() {
            let app = $spawn().await;
            $crate::platform::every_response_carries_both_ids(&app, $service).await;
        }

        #[::tokio::test]
        async fn an_unknown_route_is_a_404_problem() {
            let app = $spawn().await;
            $crate::platform::an_unknown_route_is_a_404_problem(&app).await;
        }

        #[::tokio::test]
        async fn a_wrong_method_is_a_405_problem() {
            let app = $spawn().await;
            $crate::platform::a_wrong_method_is_a_405_problem(&app).await;
        }
    };
}
