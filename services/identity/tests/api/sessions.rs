//! Refresh tokens rotate on every use; a reused one ends the whole session. Logout and an
//! administrator end sessions too.

use std::time::Duration;

use lab_test_support::eventually;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, OtherService, post, register, signed_in, spawn_app};

fn refresh_token(pair: &Value) -> String {
    pair["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned()
}

fn access_token(pair: &Value) -> String {
    pair["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

#[tokio::test]
async fn a_refresh_returns_a_new_pair_and_the_old_refresh_token_is_spent() {
    let app = spawn_app().await;
    let (_, first) = signed_in(&app, "rotate@example.com").await;

    let (status, second) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&first)}),
        None,
    )
    .await;
    let (third_status, _) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&second)}),
        None,
    )
    .await;

    assert_eq!(status, 200, "{second}");
    assert_ne!(refresh_token(&first), refresh_token(&second));
    assert_ne!(access_token(&first), access_token(&second));
    assert_eq!(third_status, 200);
}

#[tokio::test]
async fn reusing_a_spent_refresh_token_revokes_the_whole_family_and_logs_a_security_event() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (_, first) = signed_in(&app, "reuse@example.com").await;
    let (_, second) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&first)}),
        None,
    )
    .await;
    assert_eq!(other.get("/whoami", &access_token(&second)).await.0, 200);

    let (reuse_status, reuse_body) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&first)}),
        None,
    )
    .await;
    let (latest_status, _) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&second)}),
        None,
    )
    .await;
    let access_refused = eventually(Duration::from_secs(1), || async {
        (other.get("/whoami", &access_token(&second)).await.0 == 401).then_some(())
    })
    .await;
    let mut db = app.env.db().admin_connection().await.expect("connection");
    let events: Vec<(String,)> = sqlx::query_as("SELECT kind FROM identity.security_events")
        .fetch_all(&mut db)
        .await
        .expect("events");

    assert_eq!(reuse_status, 401, "{reuse_body}");
    assert_eq!(reuse_body["type"], "urn:lab:problem:invalid-refresh-token");
    assert_eq!(
        latest_status, 401,
        "the newest token of the family must die too"
    );
    assert!(
        access_refused.is_some(),
        "the family's access token stayed valid"
    );
    assert_eq!(events, vec![("refresh_token_reuse".to_owned(),)]);
    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    assert!(
        metrics.contains("identity_refresh_reuse_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unknown_or_missing_refresh_token_is_401_or_422_never_500() {
    let app = spawn_app().await;

    let (unknown, _) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": "nope"}),
        None,
    )
    .await;
    let (missing, body) = post(&app, "/token/refresh", json!({}), None).await;

    assert_eq!(unknown, 401);
    assert_eq!(missing, 422);
    assert_eq!(body["field"], "refresh_token");
}

#[tokio::test]
async fn logout_ends_the_refresh_family_too() {
    let app = spawn_app().await;
    let (token, pair) = signed_in(&app, "logout@example.com").await;

    let (status, _) = post(&app, "/logout", json!({}), Some(&token)).await;
    let (refresh_status, _) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&pair)}),
        None,
    )
    .await;
    let me = app
        .client
        .get(app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me");

    assert_eq!(status, 204);
    assert_eq!(refresh_status, 401);
    assert_eq!(me.status(), 401);
}

#[tokio::test]
async fn an_admin_revokes_every_session_of_a_user() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let user = register(&app, "victim@example.com").await;
    let laptop = crate::helpers::login(&app, "victim@example.com").await;
    let phone = crate::helpers::login(&app, "victim@example.com").await;
    let (admin, _) = signed_in(&app, ADMIN_EMAIL).await;
    let path = format!("/admin/users/{}/sessions", user["id"].as_str().expect("id"));

    let response = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("DELETE");
    let status = response.status();
    let body: Value = response.json().await.expect("json");
    let (laptop_refresh, _) = post(
        &app,
        "/token/refresh",
        json!({"refresh_token": refresh_token(&laptop)}),
        None,
    )
    .await;
    let phone_refused = eventually(Duration::from_secs(1), || async {
        (other.get("/whoami", &access_token(&phone)).await.0 == 401).then_some(())
    })
    .await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions"], 2);
    assert_eq!(laptop_refresh, 401);
    assert!(phone_refused.is_some());
}

#[tokio::test]
async fn a_non_admin_cannot_revoke_sessions() {
    let app = spawn_app().await;
    let (token, _) = signed_in(&app, "plain@example.com").await;
    let victim = register(&app, "other@example.com").await;
    let path = format!(
        "/admin/users/{}/sessions",
        victim["id"].as_str().expect("id")
    );

    let forbidden = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");
    let bad_id = app
        .client
        .delete(app.url("/admin/users/not-a-uuid/sessions"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("DELETE");

    assert_eq!(forbidden.status(), 403);
    assert!(matches!(bad_id.status().as_u16(), 400 | 403));
}

#[tokio::test]
async fn a_refresh_token_is_stored_only_as_its_sha256() {
    let app = spawn_app().await;
    let (_, pair) = signed_in(&app, "hashed@example.com").await;
    let token = refresh_token(&pair);
    let mut db = app.env.db().admin_connection().await.expect("connection");

    let (by_hash, by_text): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE token_hash = sha256(convert_to($1, 'UTF8'))),
                count(*) FILTER (WHERE position(convert_to($1, 'UTF8') IN token_hash) > 0)
         FROM identity.refresh_tokens",
    )
    .bind(&token)
    .fetch_one(&mut db)
    .await
    .expect("query");

    assert_eq!((by_hash, by_text), (1, 0));
}
