//! Registering, logging in, `/me`, and refusing bad input without a hint about which accounts
//! exist.

use serde_json::json;

use crate::helpers::{PASSWORD, post, register, signed_in, spawn_app};

#[tokio::test]
async fn a_registered_user_logs_in_and_me_returns_the_account() {
    let app = spawn_app().await;
    let registered = register(&app, "Ada@Example.com").await;

    let (token, pair) = signed_in_existing(&app, "ada@example.com").await;
    let me = app
        .client
        .get(app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me");

    assert_eq!(registered["email"], "ada@example.com");
    assert_eq!(pair["token_type"], "Bearer");
    assert!(
        pair["refresh_token"]
            .as_str()
            .is_some_and(|t| t.len() >= 43)
    );
    assert_eq!(me.status(), 200);
    let me: serde_json::Value = me.json().await.expect("json");
    assert_eq!(me["id"], registered["id"]);
    assert_eq!(me["roles"], json!([]));
    assert!(me.get("password_hash").is_none());
}

async fn signed_in_existing(
    app: &lab_test_support::TestApp,
    email: &str,
) -> (String, serde_json::Value) {
    let pair = crate::helpers::login(app, email).await;
    (
        pair["access_token"].as_str().expect("token").to_owned(),
        pair,
    )
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_both_get_401_with_the_same_body() {
    let app = spawn_app().await;
    register(&app, "grace@example.com").await;

    let (wrong_status, wrong_body) = post(
        &app,
        "/login",
        json!({"email": "grace@example.com", "password": "not the password"}),
        None,
    )
    .await;
    let (unknown_status, unknown_body) = post(
        &app,
        "/login",
        json!({"email": "nobody@example.com", "password": "not the password"}),
        None,
    )
    .await;

    assert_eq!(wrong_status, 401);
    assert_eq!(unknown_status, 401);
    assert_eq!(wrong_body, unknown_body);
    assert_eq!(wrong_body["type"], "urn:lab:problem:invalid-credentials");
}

#[tokio::test]
async fn an_email_registered_twice_gets_409_naming_the_email() {
    let app = spawn_app().await;
    register(&app, "twice@example.com").await;

    let (status, body) = post(
        &app,
        "/register",
        json!({"email": "TWICE@example.com", "password": PASSWORD}),
        None,
    )
    .await;

    assert_eq!(status, 409);
    assert_eq!(body["field"], "email");
}

#[tokio::test]
async fn bad_registrations_get_422_naming_the_field_and_never_500() {
    let app = spawn_app().await;
    let cases = [
        (json!({"password": PASSWORD}), "email"),
        (
            json!({"email": "not-an-address", "password": PASSWORD}),
            "email",
        ),
        (
            json!({"email": "short@example.com", "password": "short"}),
            "password",
        ),
        (json!({"email": "nopass@example.com"}), "password"),
        (
            json!({"email": "long@example.com", "password": "x".repeat(300)}),
            "password",
        ),
    ];

    for (body, field) in cases {
        let (status, problem) = post(&app, "/register", body.clone(), None).await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(problem["field"], field, "{body}: {problem}");
    }
}

#[tokio::test]
async fn malformed_bodies_get_problem_json_not_a_panic() {
    let app = spawn_app().await;

    let not_json = app
        .client
        .post(app.url("/login"))
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .expect("POST");
    let wrong_type = post(&app, "/login", json!({"email": 42, "password": []}), None).await;
    let no_content_type = app
        .client
        .post(app.url("/register"))
        .body("email=a")
        .send()
        .await
        .expect("POST");

    assert_eq!(not_json.status(), 400);
    assert_eq!(not_json.headers()["content-type"], lab_http::PROBLEM_JSON);
    assert_eq!(wrong_type.0, 422);
    assert_eq!(no_content_type.status(), 415);
}

#[tokio::test]
async fn me_without_a_token_is_401_with_a_bearer_challenge() {
    let app = spawn_app().await;

    let response = app.get("/me").await;

    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"lab\""
    );
}

#[tokio::test]
async fn an_admin_email_registers_with_the_admin_role() {
    let app = spawn_app().await;

    let (token, _) = signed_in(&app, crate::helpers::ADMIN_EMAIL).await;
    let me = app
        .client
        .get(app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me")
        .json::<serde_json::Value>()
        .await
        .expect("json");

    assert_eq!(me["roles"], json!(["admin"]));
}
