//! `Idempotency-Key` replay through the edge stack: two replicas on one Redis, an upstream that
//! answers a new id on every call it really serves.

use lab_test_support::{TestApp, TestEnv};
use reqwest::StatusCode;
use reqwest::header::HeaderValue;

use crate::stack::{Upstream, edge_settings, new_session, spawn_stack};

/// What a test compares of one answer.
struct Answer {
    status: StatusCode,
    replayed: bool,
    location: Option<String>,
    etag: Option<String>,
    retry_after: Option<String>,
    body: Vec<u8>,
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: &str,
    key: Option<HeaderValue>,
    body: &str,
) -> Answer {
    let mut request = app
        .client
        .post(app.url(path))
        .header("cookie", cookie)
        .header("content-type", "text/plain")
        .body(body.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {path}: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answer {
        status: response.status(),
        replayed: header("idempotent-replayed").as_deref() == Some("true"),
        location: header("location"),
        etag: header("etag"),
        retry_after: header("retry-after"),
        body: response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default(),
    }
}

fn key(text: &str) -> Option<HeaderValue> {
    Some(HeaderValue::from_str(text).unwrap_or_else(|e| panic!("{e}")))
}

#[tokio::test]
async fn a_repeat_on_another_replica_replays_the_first_answer_byte_for_byte() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let first = spawn_stack(&env, &edge_settings(), &upstream).await;
    let second = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&first).await;

    let original = post(
        &first,
        "/api/things",
        &cookie,
        key("order-1"),
        "{\"qty\":1}",
    )
    .await;
    let repeat = post(
        &second,
        "/api/things",
        &cookie,
        key("order-1"),
        "{\"qty\":1}",
    )
    .await;
    let other_key = post(
        &second,
        "/api/things",
        &cookie,
        key("order-2"),
        "{\"qty\":1}",
    )
    .await;

    assert_eq!(original.status, StatusCode::CREATED);
    assert!(!original.replayed);
    assert_eq!(repeat.status, StatusCode::CREATED);
    assert!(repeat.replayed);
    assert_eq!(repeat.body, original.body);
    assert_eq!(repeat.location, original.location);
    assert!(original.location.is_some());
    assert_eq!(repeat.etag, original.etag);
    assert_ne!(other_key.body, original.body);
    assert_eq!(upstream.creates(), 2);
}

#[tokio::test]
async fn the_same_key_with_a_different_body_is_a_422_problem() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&app).await;

    post(&app, "/api/things", &cookie, key("k-1"), "{\"qty\":1}").await;
    let reused = post(&app, "/api/things", &cookie, key("k-1"), "{\"qty\":2}").await;

    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = serde_json::from_slice(&reused.body).unwrap_or_default();
    assert_eq!(
        body["type"], "urn:lab:problem:idempotency-key-reused",
        "{body:#}"
    );
    assert_eq!(upstream.creates(), 1);
}

#[tokio::test]
async fn parallel_repeats_across_replicas_reach_the_upstream_once() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let first = spawn_stack(&env, &edge_settings(), &upstream).await;
    let second = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&first).await;

    // The upstream takes 400 ms on a "slow" body, so the repeats arrive while it runs.
    let answers = futures::future::join_all((0..6).map(|i| {
        let app = if i % 2 == 0 { &first } else { &second };
        post(app, "/api/things", &cookie, key("same"), "slow")
    }))
    .await;

    assert_eq!(upstream.creates(), 1);
    let originals = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED && !a.replayed);
    assert_eq!(originals.count(), 1);
    for answer in &answers {
        match answer.status {
            StatusCode::CREATED => {}
            StatusCode::CONFLICT => assert_eq!(answer.retry_after.as_deref(), Some("1")),
            other => panic!("unexpected {other}"),
        }
    }
    let after = post(&second, "/api/things", &cookie, key("same"), "slow").await;
    assert!(after.replayed && after.status == StatusCode::CREATED);
    assert_eq!(upstream.creates(), 1);
}

#[tokio::test]
async fn a_5xx_first_attempt_is_not_kept_so_a_retry_runs_and_is_kept() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&app).await;

    let failed = post(&app, "/api/flaky", &cookie, key("retry-me"), "x").await;
    let retried = post(&app, "/api/flaky", &cookie, key("retry-me"), "x").await;
    let replayed = post(&app, "/api/flaky", &cookie, key("retry-me"), "x").await;

    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        (retried.status, retried.replayed),
        (StatusCode::CREATED, false)
    );
    assert_eq!(
        (replayed.status, replayed.replayed),
        (StatusCode::CREATED, true)
    );
    assert_eq!(replayed.body, b"made");
    assert_eq!(upstream.flaky(), 2);
}

#[tokio::test]
async fn a_malformed_key_is_a_400_problem_and_requests_without_one_always_run() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&app).await;
    let too_long = key(&"k".repeat(256));
    let non_ascii = Some(HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap_or_else(|e| panic!("{e}")));

    let long = post(&app, "/api/things", &cookie, too_long, "{}").await;
    let accented = post(&app, "/api/things", &cookie, non_ascii, "{}").await;
    let plain = [
        post(&app, "/api/things", &cookie, None, "{}").await,
        post(&app, "/api/things", &cookie, None, "{}").await,
    ];

    for refused in [&long, &accented] {
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        let body: serde_json::Value = serde_json::from_slice(&refused.body).unwrap_or_default();
        assert_eq!(body["type"], "urn:lab:problem:idempotency-key", "{body:#}");
    }
    assert!(
        plain
            .iter()
            .all(|a| a.status == StatusCode::CREATED && !a.replayed)
    );
    assert_eq!(upstream.creates(), 2);
}

#[tokio::test]
async fn keys_belong_to_a_session_so_another_visitor_with_the_same_key_runs_its_own() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let alice = new_session(&app).await;
    let bob = new_session(&app).await;

    let first = post(&app, "/api/things", &alice, key("k"), "{}").await;
    let other = post(&app, "/api/things", &bob, key("k"), "{}").await;

    assert!(!first.replayed && !other.replayed);
    assert_ne!(first.body, other.body);
    assert_eq!(upstream.creates(), 2);
}

#[tokio::test]
async fn an_answer_too_large_to_keep_passes_through_whole_and_a_repeat_runs_again() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&app).await;

    let first = post(&app, "/api/big", &cookie, key("big"), "").await;
    let second = post(&app, "/api/big", &cookie, key("big"), "").await;

    for answer in [&first, &second] {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.replayed);
        assert_eq!(answer.body.len(), crate::stack::BIG_ANSWER);
    }
    assert_eq!(upstream.big(), 2);
}

#[tokio::test]
async fn with_redis_down_keyed_requests_run_unprotected_rather_than_fail() {
    let env = TestEnv::builder().with_private_redis().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&app).await;

    env.stop_redis().await;
    let first = post(&app, "/api/things", &cookie, key("k"), "{}").await;
    let second = post(&app, "/api/things", &cookie, key("k"), "{}").await;

    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(!second.replayed);
    assert_eq!(upstream.creates(), 2);
}

#[tokio::test]
async fn a_keyed_body_over_the_limit_is_a_413_problem_and_never_runs() {
    let env = TestEnv::builder().start().await;
    let upstream = Upstream::default();
    let app = spawn_stack(&env, &edge_settings(), &upstream).await;
    let cookie = new_session(&app).await;

    let huge = "x".repeat(1024 * 1024 + 1);
    let answer = post(&app, "/api/things", &cookie, key("huge"), &huge).await;

    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(upstream.creates(), 0);
}
