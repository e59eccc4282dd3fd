//! The browser edge on the real server: CORS only for configured origins, security headers on
//! every answer.

use lab_test_support::{TestApp, TestEnv};
use reqwest::{Method, StatusCode};

use crate::helpers::settings;

const PAGE_ORIGIN: &str = "https://lab.example";

async fn spawn_with_origins() -> TestApp {
    let env = TestEnv::builder().start().await;
    let mut settings = settings(&env, &[]);
    settings.security.cors_origins = format!("{PAGE_ORIGIN}/, http://localhost:5173");
    env.spawn(lab_bff::build, settings).await
}

async fn preflight(bff: &TestApp, origin: &str) -> reqwest::Response {
    bff.client
        .request(Method::OPTIONS, bff.url("/api/orders"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, idempotency-key",
        )
        .send()
        .await
        .expect("answered")
}

#[tokio::test]
async fn a_preflight_from_a_configured_origin_allows_the_headers_the_pages_send() {
    let bff = spawn_with_origins().await;

    let response = preflight(&bff, PAGE_ORIGIN).await;

    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], PAGE_ORIGIN);
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .unwrap_or_default();
    assert!(allowed.contains("idempotency-key"), "{allowed}");
}

#[tokio::test]
async fn an_origin_not_configured_gets_no_cors_permission() {
    let bff = spawn_with_origins().await;

    let response = preflight(&bff, "https://evil.example").await;

    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        response.headers()
    );
}

#[tokio::test]
async fn a_cross_origin_answer_exposes_the_ids_and_carries_the_security_headers() {
    let bff = spawn_with_origins().await;

    let response = bff
        .client
        .get(bff.url("/api/health"))
        .header("origin", PAGE_ORIGIN)
        .send()
        .await
        .expect("answered");

    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], PAGE_ORIGIN);
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .unwrap_or_default();
    assert!(exposed.contains("x-upstream-instance-id"), "{exposed}");
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("referrer-policy"));
    assert!(!headers.contains_key("strict-transport-security"));
}

#[tokio::test]
async fn without_configured_origins_no_cors_header_is_sent() {
    let env = TestEnv::builder().start().await;
    let bff = env.spawn(lab_bff::build, settings(&env, &[])).await;

    let response = preflight(&bff, PAGE_ORIGIN).await;

    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}
