//! The proxy's resilience against the stub: the breaker opening, failing fast and closing
//! after its probe; timeouts, refusals and the upstream's own problems each answered by the one
//! table; retries only for requests safe to repeat.

use std::time::Duration;

use lab_test_support::poll::eventually;
use lab_test_support::{TestApp, TestEnv, closed_port_url};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{quick_proxy, spawn_bff_with};
use crate::stub::{Mode, STUB_PROBLEM, Stub};

async fn bff_before(env: &TestEnv, service: &str, url: &str) -> TestApp {
    spawn_bff_with(env, &[(service, url.to_owned())], quick_proxy()).await
}

async fn problem(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    (status, response.json().await.expect("a problem document"))
}

#[tokio::test]
async fn a_failing_upstream_opens_the_breaker_which_fails_fast_with_retry_after_until_a_probe_closes_it()
 {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::PlainUnavailable).await;
    // A break of a second rather than `quick_proxy`'s 400 ms: the request after the breaker
    // opened must come inside it, and on a loaded machine (the whole suite at once) 400 ms
    // once passed in between and that request was the half-open probe. `Retry-After` is still
    // "1" (whole seconds, rounded up).
    let settings = lab_bff::ProxySettings {
        breaker_break_ms: 1_000,
        ..quick_proxy()
    };
    let bff = spawn_bff_with(&env, &[("catalog", stub.url.clone())], settings).await;

    let open = eventually(Duration::from_secs(10), || async {
        let response = bff.get("/api/products").await;
        let retry_after = response.headers().get("retry-after").cloned();
        let (_, body) = problem(response).await;
        (body["type"] == "urn:lab:problem:circuit-open").then_some((retry_after, body))
    })
    .await;
    let (retry_after, body) = open.expect("the breaker never opened");
    assert_eq!(body["status"], 503, "{body:#}");
    assert_eq!(retry_after.expect("Retry-After"), "1");
    let hits = stub.hits();
    let (status, _) = problem(bff.get("/api/products").await).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(stub.hits(), hits, "an open breaker let a request through");

    stub.set(Mode::Ok);

    let closed = eventually(Duration::from_secs(10), || async {
        (bff.get("/api/products").await.status() == StatusCode::OK).then_some(())
    })
    .await;
    assert!(closed.is_some(), "the probe never closed the breaker");
    let (_, breakers) = bff.get_json("/api/breakers").await;
    assert_eq!(breakers["breakers"][0]["state"], "closed", "{breakers:#}");
    assert_eq!(
        breakers["breakers"][0]["counters"]["opened"], 1,
        "{breakers:#}"
    );
    let counters = &breakers["breakers"][0]["counters"];
    assert!(counters["failures"].as_u64() >= Some(1), "{breakers:#}");
    assert!(counters["successes"].as_u64() >= Some(1), "{breakers:#}");
    assert!(counters["rejected"].as_u64() >= Some(1), "{breakers:#}");
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_in_time_is_a_504_problem() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Hang).await;
    let bff = bff_before(&env, "catalog", &stub.url).await;

    let (status, body) = problem(bff.get("/api/products").await).await;

    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(body["type"], "urn:lab:problem:upstream-timeout", "{body:#}");
    assert_eq!(body["upstream"], "catalog");
}

#[tokio::test]
async fn an_upstream_refusing_connections_is_a_503_problem() {
    let env = TestEnv::builder().start().await;
    let bff = bff_before(&env, "catalog", &closed_port_url("http")).await;

    let (status, body) = problem(bff.get("/api/products").await).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "urn:lab:problem:upstream-refused", "{body:#}");
}

#[tokio::test]
async fn a_service_with_no_instance_configured_is_a_503_problem() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::Ok).await;
    let bff = bff_before(&env, "catalog", &stub.url).await;

    let (status, body) = problem(bff.get("/api/orders/1").await).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["upstream"], "orders", "{body:#}");
}

#[tokio::test]
async fn an_upstreams_own_problem_passes_through_as_it_is() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::ProblemUnavailable).await;
    let bff = bff_before(&env, "catalog", &stub.url).await;

    let response = bff.get("/api/products").await;

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(response.text().await.expect("body"), STUB_PROBLEM);
}

#[tokio::test]
async fn a_plain_5xx_from_the_upstream_becomes_a_502_gateway_problem() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::PlainUnavailable).await;
    let bff = bff_before(&env, "orders", &stub.url).await;

    let (status, body) = problem(
        bff.client
            .post(bff.url("/api/orders"))
            .body("{}")
            .send()
            .await
            .expect("answered"),
    )
    .await;

    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body["type"], "urn:lab:problem:bad-gateway", "{body:#}");
}

/// The stub's calls that came through the proxy: the leader's health probes (`/readyz`, every
/// 2 s) and its credentials watch (`/credentials`) reach the same stub and would be counted as
/// retries on a slow run.
fn proxied(stub: &Stub) -> usize {
    stub.paths()
        .iter()
        .filter(|p| !p.starts_with("/readyz") && !p.starts_with("/credentials"))
        .count()
}

#[tokio::test]
async fn a_get_is_retried_a_post_without_idempotency_key_is_not_and_one_with_a_key_is() {
    let env = TestEnv::builder().start().await;
    let stub = Stub::start(Mode::PlainUnavailable).await;
    // A breaker that stays closed, so every attempt reaches the stub.
    let proxy = lab_bff::ProxySettings {
        breaker_minimum_throughput: 1_000,
        ..quick_proxy()
    };
    let bff = spawn_bff_with(&env, &[("orders", stub.url.clone())], proxy).await;

    // A fresh connection per request: a pooled one that the server closed at the wrong moment
    // would be retried by the client itself, and the BFF would count two calls.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("a client");
    let _ = client.get(bff.url("/api/orders/1")).send().await;
    let after_get = proxied(&stub);
    let _ = client
        .post(bff.url("/api/orders"))
        .body("{}")
        .send()
        .await
        .expect("answered");
    let after_post = proxied(&stub);
    let _ = client
        .post(bff.url("/api/orders"))
        .header("idempotency-key", "k-1")
        .body("{}")
        .send()
        .await
        .expect("answered");

    assert_eq!(after_get, 3, "a GET: one attempt and two retries");
    assert_eq!(
        after_post - after_get,
        1,
        "a POST without a key: one attempt"
    );
    assert_eq!(
        proxied(&stub) - after_post,
        3,
        "a keyed POST: one attempt and two retries"
    );
}

#[tokio::test]
async fn a_replica_that_stops_answering_is_ejected_after_its_timeouts_and_probed_back_in_when_it_answers()
 {
    let env = TestEnv::builder().start().await;
    let frozen = Stub::start(Mode::Hang).await;
    let healthy = Stub::start(Mode::Ok).await;
    let urls = format!("{},{}", frozen.url, healthy.url);
    let bff = spawn_bff_with(&env, &[("catalog", urls)], quick_proxy()).await;

    // Every read still succeeds: an attempt on the frozen replica times out and is retried on
    // the other, until the frozen one's breaker opens and it is skipped.
    for _ in 0..12 {
        assert_eq!(bff.get("/api/products").await.status(), StatusCode::OK);
    }
    let (_, breakers) = bff.get_json("/api/breakers").await;
    assert_eq!(breakers["breakers"][0]["endpoint"], frozen.url.as_str());
    assert_eq!(breakers["breakers"][0]["state"], "open", "{breakers:#}");
    let frozen_hits = frozen.hits();
    assert!(frozen_hits >= 5, "{frozen_hits}");

    frozen.set(Mode::Ok);

    let back = eventually(Duration::from_secs(10), || async {
        let _ = bff.get("/api/products").await;
        let (_, breakers) = bff.get_json("/api/breakers").await;
        (breakers["breakers"][0]["state"] == "closed").then_some(())
    })
    .await;
    assert!(back.is_some(), "the replica was never probed back in");
    assert!(frozen.hits() > frozen_hits);
}
