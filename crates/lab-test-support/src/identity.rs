//! Real identity tokens for any service's tests: register, log in and log out against an
//! identity service the test has spawned (over HTTP, so this crate needs no identity code).
//!
//! Identity's own tests and every service that checks tokens with lab-auth share these, so a
//! token in a catalog or orders test is exactly what a browser would hold.

use serde_json::{Value, json};

use crate::TestApp;

/// A password that passes identity's rules.
pub const PASSWORD: &str = "correct horse battery staple";

/// Registers with this address to become an administrator, when the test's identity lists it
/// in `admin_emails`.
pub const ADMIN_EMAIL: &str = "admin@example.com";

/// Where `identity` publishes its signing keys: a service's `auth.jwks_url`.
pub fn jwks_url(identity: &TestApp) -> String {
    identity.url("/.well-known/jwks.json")
}

/// `POST path` on `app` with a JSON body (and a bearer token), as status and JSON body.
pub async fn post(app: &TestApp, path: &str, body: Value, bearer: Option<&str>) -> (u16, Value) {
    let mut request = app.client.post(app.url(path)).json(&body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Registers `email` with [`PASSWORD`]; panics unless 201.
pub async fn register(identity: &TestApp, email: &str) -> Value {
    let (status, body) = post(
        identity,
        "/register",
        json!({"email": email, "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body
}

/// Logs `email` in with [`PASSWORD`]; panics unless 200. Returns the token pair.
pub async fn login(identity: &TestApp, email: &str) -> Value {
    let (status, body) = post(
        identity,
        "/login",
        json!({"email": email, "password": PASSWORD}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Registers and logs in; returns the access token and the whole pair.
pub async fn signed_in(identity: &TestApp, email: &str) -> (String, Value) {
    register(identity, email).await;
    let pair = login(identity, email).await;
    (
        pair["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned(),
        pair,
    )
}

/// Logs the session of `access_token` out (identity revokes the token); panics unless 204.
pub async fn logout(identity: &TestApp, access_token: &str) {
    let (status, body) = post(identity, "/logout", json!({}), Some(access_token)).await;
    assert_eq!(status, 204, "{body}");
}

/// The client secret tests give identity (`client.secret`) and the BFF (`client.secret`), so
/// identity issues the BFF its narrow `demo` client token.
pub const CLIENT_SECRET: &str = "lab-test-client-secret";

/// A `demo`-scoped client token from `identity` for the client `bff`, which must have been
/// started with [`CLIENT_SECRET`]; panics unless 200.
pub async fn client_token(identity: &TestApp) -> String {
    let (status, body) = post(
        identity,
        "/token/client",
        json!({"client_id": "bff", "client_secret": CLIENT_SECRET}),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}
