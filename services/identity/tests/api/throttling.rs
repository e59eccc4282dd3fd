//! Login throttling per account and per client address: 429 problem+json with Retry-After.

use lab_identity::ThrottleSettings;
use lab_test_support::TestApp;
use serde_json::json;

use crate::helpers::{PASSWORD, register};

async fn spawn_with(throttle: ThrottleSettings) -> TestApp {
    let env = crate::helpers::env().await;
    let settings = lab_identity::Settings {
        throttle,
        ..crate::helpers::settings(&env)
    };
    env.spawn(lab_identity::build, settings).await
}

async fn login_from(
    app: &TestApp,
    address: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .header("x-forwarded-for", address)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("POST /login")
}

#[tokio::test]
async fn an_account_with_too_many_failures_gets_429_with_retry_after_even_with_the_right_password()
{
    let app = spawn_with(ThrottleSettings {
        account_failures: 3,
        address_attempts: 1_000,
        ..ThrottleSettings::default()
    })
    .await;
    register(&app, "target@example.com").await;
    for i in 0..3 {
        let address = format!("10.0.0.{i}");
        let response = login_from(&app, &address, "target@example.com", "wrong password").await;
        assert_eq!(response.status(), 401);
    }

    let response = login_from(&app, "10.0.1.1", "target@example.com", PASSWORD).await;

    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    assert_eq!(response.headers()["content-type"], lab_http::PROBLEM_JSON);
}

#[tokio::test]
async fn an_unknown_account_is_throttled_exactly_like_a_known_one() {
    let app = spawn_with(ThrottleSettings {
        account_failures: 2,
        address_attempts: 1_000,
        ..ThrottleSettings::default()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(
            login_from(&app, "10.0.0.1", "ghost@example.com", "whatever1")
                .await
                .status(),
            401
        );
    }

    let response = login_from(&app, "10.0.0.1", "ghost@example.com", "whatever1").await;

    assert_eq!(response.status(), 429);
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("identity_logins_throttled_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("identity_logins_failed_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn one_address_trying_many_accounts_gets_429_while_another_address_goes_on() {
    let app = spawn_with(ThrottleSettings {
        address_attempts: 4,
        ..ThrottleSettings::default()
    })
    .await;
    register(&app, "fine@example.com").await;
    for i in 0..4 {
        let email = format!("spray{i}@example.com");
        assert_eq!(
            login_from(&app, "192.0.2.7", &email, "password1")
                .await
                .status(),
            401
        );
    }

    let sprayer = login_from(&app, "192.0.2.7", "fine@example.com", PASSWORD).await;
    let neighbour = login_from(&app, "192.0.2.8", "fine@example.com", PASSWORD).await;

    assert_eq!(sprayer.status(), 429);
    assert!(sprayer.headers().contains_key("retry-after"));
    assert_eq!(neighbour.status(), 200);
}
