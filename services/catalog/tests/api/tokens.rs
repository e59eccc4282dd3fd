//! Identity's access tokens at catalog's administrator routes: a real identity (keys in
//! OpenBao) issues them, catalog checks them with lab-auth; the break-glass token keeps working.

use std::time::Duration;

use lab_config::SecretString;
use lab_test_support::identity::{ADMIN_EMAIL, logout, signed_in};
use lab_test_support::{TestApp, eventually};
use reqwest::Method;
use serde_json::{Value, json};

use crate::catalog::ADMIN;
use crate::helpers::{
    auth_settings, env_with_identity, identity_settings, settings, spawn_identity,
};

/// Identity and one catalog replica (with the break-glass token) on one fresh environment.
async fn identity_and_catalog() -> (TestApp, TestApp) {
    let env = env_with_identity().await;
    let identity = spawn_identity(&env).await;
    let catalog_settings = lab_catalog::Settings {
        auth: auth_settings(&identity),
        admin_token: Some(SecretString::new(ADMIN)),
        ..settings(&env)
    };
    let catalog = env.spawn(lab_catalog::build, catalog_settings).await;
    (identity, catalog)
}

fn new_product(sku: &str) -> Value {
    json!({"sku": sku, "name": "Made by a token", "price_minor": 100, "currency": "EUR"})
}

/// `method path` with `token` and `body` → (status, `WWW-Authenticate`, content type, body).
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, String, String, Value) {
    let response = app
        .client
        .request(method, app.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, challenge, ctype) = (
        response.status().as_u16(),
        header("www-authenticate"),
        header("content-type"),
    );
    (
        status,
        challenge,
        ctype,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// A `DELETE` with no `If-Match` of a product nobody has: an administrator gets 428 (past the
/// role check, short of any change), anyone else 401 or 403.
async fn admin_probe(app: &TestApp, token: &str) -> (u16, String, String, Value) {
    let path = format!("/products/{}", uuid::Uuid::now_v7());
    send(app, Method::DELETE, &path, token, &Value::Null).await
}

#[tokio::test]
async fn an_administrators_token_from_identity_creates_a_product() {
    let (identity, catalog) = identity_and_catalog().await;
    let (token, _) = signed_in(&identity, ADMIN_EMAIL).await;

    let (status, _, _, body) = send(
        &catalog,
        Method::POST,
        "/products",
        &token,
        &new_product("TOKEN-1"),
    )
    .await;

    assert_eq!(status, 201, "{body}");
    assert_eq!(body["sku"], "TOKEN-1");
}

#[tokio::test]
async fn the_break_glass_token_still_creates_a_product_beside_identity() {
    let (_identity, catalog) = identity_and_catalog().await;

    let (status, _, _, body) = send(
        &catalog,
        Method::POST,
        "/products",
        ADMIN,
        &new_product("GLASS-1"),
    )
    .await;

    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn a_valid_token_without_the_admin_role_gets_403_with_a_challenge() {
    let (identity, catalog) = identity_and_catalog().await;
    let (token, _) = signed_in(&identity, "shopper@example.com").await;

    let (status, challenge, ctype, body) = send(
        &catalog,
        Method::POST,
        "/products",
        &token,
        &new_product("NOPE-1"),
    )
    .await;

    assert_eq!(status, 403, "{body}");
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert_eq!(ctype, "application/problem+json");
}

#[tokio::test]
async fn after_logout_the_administrators_token_is_refused_within_a_second() {
    let (identity, catalog) = identity_and_catalog().await;
    let (token, _) = signed_in(&identity, ADMIN_EMAIL).await;
    let (before, ..) = admin_probe(&catalog, &token).await;

    logout(&identity, &token).await;
    let refused = eventually(Duration::from_secs(1), || async {
        let answer = admin_probe(&catalog, &token).await;
        (answer.0 == 401).then_some(answer)
    })
    .await;

    assert_eq!(before, 428);
    let (_, challenge, ctype, body) = refused.expect("catalog still accepted the token after 1 s");
    assert_eq!(body["detail"], "the token has been revoked");
    assert!(
        challenge.starts_with("Bearer realm=\"lab\", error=\"invalid_token\""),
        "{challenge}"
    );
    assert_eq!(ctype, "application/problem+json");
}

#[tokio::test]
async fn an_expired_administrators_token_is_401_with_a_challenge() {
    // One-second tokens and no leeway: the token expires while the test watches.
    let env = env_with_identity().await;
    let identity_settings = lab_identity::Settings {
        tokens: lab_identity::TokenSettings {
            access_ttl_s: 1,
            ..lab_identity::TokenSettings::default()
        },
        ..identity_settings(&env)
    };
    let identity = env.spawn(lab_identity::build, identity_settings).await;
    let catalog = env
        .spawn(
            lab_catalog::build,
            lab_catalog::Settings {
                auth: lab_auth::AuthSettings {
                    leeway_s: 0,
                    ..auth_settings(&identity)
                },
                ..settings(&env)
            },
        )
        .await;
    let (token, _) = signed_in(&identity, ADMIN_EMAIL).await;

    let refused = eventually(Duration::from_secs(5), || async {
        let answer = admin_probe(&catalog, &token).await;
        (answer.0 == 401).then_some(answer)
    })
    .await;

    let (_, challenge, _, body) = refused.expect("the expired token was still accepted");
    assert_eq!(body["detail"], "the token has expired");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
}

#[tokio::test]
async fn a_visitor_without_a_token_still_edits_demo_products_only() {
    let (_identity, catalog) = identity_and_catalog().await;

    let response = catalog
        .client
        .post(catalog.url("/products"))
        .json(&new_product("ANON-1"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 403);
}

#[tokio::test]
async fn without_identity_configured_a_token_is_refused_and_the_break_glass_token_works() {
    // As `lab up` runs catalog when identity cannot run: an empty JWKS URL.
    let env = crate::helpers::env().await;
    let catalog = env
        .spawn(
            lab_catalog::build,
            lab_catalog::Settings {
                auth: lab_auth::AuthSettings {
                    jwks_url: String::new(),
                    ..lab_auth::AuthSettings::default()
                },
                admin_token: Some(SecretString::new(ADMIN)),
                ..settings(&env)
            },
        )
        .await;
    let stranger = lab_auth::SigningKey::from_seed("nobody", &[7u8; 32]).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = stranger
        .sign(&lab_auth::Claims {
            iss: "lab-identity".into(),
            aud: lab_auth::Audience::One("lab".into()),
            sub: "someone".into(),
            jti: uuid::Uuid::now_v7().to_string(),
            exp: now + 600,
            iat: now,
            nbf: None,
            roles: vec!["admin".into()],
            scope: String::new(),
            sid: None,
        })
        .unwrap();

    let (refused, _, ctype, body) = admin_probe(&catalog, &token).await;
    let (glass, ..) = admin_probe(&catalog, ADMIN).await;

    assert_eq!(refused, 503, "{body}");
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(glass, 428);
}
