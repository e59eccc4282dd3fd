//! Another service, with nothing but lab-auth in front of its routes, refuses every token it
//! must: `alg: none`, HMAC signed with the public key, an unknown `kid`, the wrong audience,
//! expired, revoked, and (for an admin route) a non-administrator.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lab_auth::jwt::b64url;
use lab_auth::{Audience, Claims, SigningKey};
use lab_config::SecretString;
use lab_test_support::{TestApp, eventually};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, OtherService, post, signed_in, spawn_app};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// Identity's current signing key, read from OpenBao as a thief with the root token would.
pub async fn identity_key(app: &TestApp) -> SigningKey {
    let vault = lab_vault::Vault::new(
        &app.env.vault().addr,
        SecretString::new(app.env.vault().root_token.clone()),
    )
    .expect("vault client");
    let doc: Value = vault
        .kv_get("secret", "lab/identity/signing-keys")
        .await
        .expect("read the key document")
        .expect("identity stored a key");
    let seed = lab_auth::jwt::b64url_decode(doc["current"]["seed"].as_str().expect("seed"))
        .expect("base64url seed");
    SigningKey::from_seed(doc["current"]["kid"].as_str().expect("kid"), &seed).expect("key")
}

fn claims(aud: &str, exp: i64) -> Claims {
    Claims {
        iss: "lab-identity".into(),
        aud: Audience::One(aud.into()),
        sub: "someone".into(),
        jti: uuid::Uuid::new_v4().to_string(),
        exp,
        iat: now(),
        nbf: None,
        roles: vec!["admin".into()],
        scope: String::new(),
        sid: None,
    }
}

/// A token with any header, signed by `sign` over the signing input.
fn forge(header: Value, claims: &Claims, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(&serde_json::to_vec(claims).expect("json"))
    );
    let signature = sign(input.as_bytes());
    format!("{input}.{}", b64url(&signature))
}

async fn refused(other: &OtherService, token: &str) -> (u16, String, Value) {
    let (status, challenge, body) = other.get("/whoami", token).await;
    (status, challenge.unwrap_or_default(), body)
}

#[tokio::test]
async fn a_token_from_identity_is_accepted_by_another_service() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (token, _) = signed_in(&app, "ok@example.com").await;

    let (status, _, body) = other.get("/whoami", &token).await;

    assert_eq!(status, 200, "{body}");
    assert!(body["sub"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn alg_none_is_refused_with_401_and_a_bearer_challenge() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let key = identity_key(&app).await;
    let unsigned = forge(
        json!({"alg": "none", "kid": key.kid()}),
        &claims("lab", now() + 600),
        |_| Vec::new(),
    );

    let (status, challenge, body) = refused(&other, &unsigned).await;

    assert_eq!(status, 401, "{body}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert_eq!(body["type"], "urn:lab:problem:unauthenticated");
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_bytes_is_refused() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let key = identity_key(&app).await;
    let public = key.public_key().to_vec();
    let x = b64url(&public);
    let claims = claims("lab", now() + 600);

    // Both the raw key and its JWK text, the two things an attacker might try as the secret.
    for secret in [public.clone(), x.into_bytes()] {
        let hmac_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let forged = forge(
            json!({"alg": "HS256", "kid": key.kid()}),
            &claims,
            |input| ring::hmac::sign(&hmac_key, input).as_ref().to_vec(),
        );

        let (status, _, body) = refused(&other, &forged).await;

        assert_eq!(status, 401, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains("HS256")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn a_token_naming_an_unknown_kid_is_refused() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let stranger = SigningKey::from_seed("not-a-lab-key", &[9u8; 32]).expect("key");
    let token = stranger.sign(&claims("lab", now() + 600)).expect("sign");

    let (status, _, body) = refused(&other, &token).await;

    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("unknown key")),
        "{body}"
    );
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let key = identity_key(&app).await;
    let token = key
        .sign(&claims("someone-else", now() + 600))
        .expect("sign");

    let (status, _, body) = refused(&other, &token).await;

    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("audience")),
        "{body}"
    );
}

#[tokio::test]
async fn an_expired_token_is_refused_beyond_the_leeway() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let key = identity_key(&app).await;
    // The default leeway is 30 s; a minute past expiry is past it.
    let token = key.sign(&claims("lab", now() - 60)).expect("sign");

    let (status, _, body) = refused(&other, &token).await;

    assert_eq!(status, 401, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("expired")),
        "{body}"
    );
}

#[tokio::test]
async fn a_tampered_signature_is_refused() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (token, _) = signed_in(&app, "tamper@example.com").await;
    let mut forged: Vec<char> = token.chars().collect();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == 'A' { 'B' } else { 'A' };

    let (status, _, _) = refused(&other, &forged.into_iter().collect::<String>()).await;

    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_user_without_the_admin_role_gets_403_on_an_admin_route() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (user, _) = signed_in(&app, "user@example.com").await;
    let (admin, _) = signed_in(&app, ADMIN_EMAIL).await;

    let (user_status, challenge, _) = other.get("/admin-only", &user).await;
    let (admin_status, _, _) = other.get("/admin-only", &admin).await;

    assert_eq!(user_status, 403);
    assert!(challenge.unwrap_or_default().contains("insufficient_scope"));
    assert_eq!(admin_status, 200);
}

#[tokio::test]
async fn after_logout_another_service_refuses_the_token_within_a_second() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (token, _) = signed_in(&app, "bye@example.com").await;
    assert_eq!(other.get("/whoami", &token).await.0, 200);

    let (status, _) = post(&app, "/logout", json!({}), Some(&token)).await;
    let refused_in_time = eventually(Duration::from_secs(1), || async {
        let (status, _, body) = other.get("/whoami", &token).await;
        (status == 401 && body["detail"] == "the token has been revoked").then_some(())
    })
    .await;

    assert_eq!(status, 204);
    assert!(
        refused_in_time.is_some(),
        "the other service still accepted the token after 1 s"
    );
}

#[tokio::test]
async fn a_revoked_token_is_still_refused_after_the_other_service_restarts() {
    let app = spawn_app().await;
    let (token, _) = signed_in(&app, "restart@example.com").await;
    let other = OtherService::start(&app).await;
    assert_eq!(other.get("/whoami", &token).await.0, 200);
    let (status, _) = post(&app, "/logout", json!({}), Some(&token)).await;
    assert_eq!(status, 204);
    let refused_before = eventually(Duration::from_secs(1), || async {
        (other.get("/whoami", &token).await.0 == 401).then_some(())
    })
    .await;
    other.stop();

    let restarted = OtherService::start(&app).await;
    let (status, _, body) = restarted.get("/whoami", &token).await;

    assert!(refused_before.is_some());
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["detail"], "the token has been revoked");
}

#[tokio::test]
async fn the_configured_client_gets_a_demo_token_that_opens_scoped_routes_but_not_user_ones() {
    let env = crate::helpers::env().await;
    let settings = lab_identity::Settings {
        client: lab_identity::ClientSettings {
            secret: SecretString::new("demo-secret"),
            ..lab_identity::ClientSettings::default()
        },
        ..crate::helpers::settings(&env)
    };
    let app = env.spawn(lab_identity::build, settings).await;
    let other = OtherService::start(&app).await;

    let (status, issued) = post(
        &app,
        "/token/client",
        json!({"client_id": "bff", "client_secret": "demo-secret"}),
        None,
    )
    .await;
    let (wrong, wrong_body) = post(
        &app,
        "/token/client",
        json!({"client_id": "bff", "client_secret": "guess"}),
        None,
    )
    .await;
    let token = issued["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (demo, _, _) = other.get("/demo", &token).await;
    let (admin, _, _) = other.get("/admin-only", &token).await;
    let me = app
        .client
        .get(app.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me");

    assert_eq!(status, 200, "{issued}");
    assert_eq!(issued["scope"], "demo");
    assert_eq!(wrong, 401, "{wrong_body}");
    assert_eq!(demo, 200);
    assert_eq!(admin, 403);
    assert_eq!(me.status(), 403);
}

#[tokio::test]
async fn without_a_configured_secret_no_client_token_is_issued() {
    let app = spawn_app().await;

    let (status, _) = post(
        &app,
        "/token/client",
        json!({"client_id": "bff", "client_secret": ""}),
        None,
    )
    .await;
    let (anyone, _) = post(
        &app,
        "/token/client",
        json!({"client_id": "bff", "client_secret": "x"}),
        None,
    )
    .await;

    assert_eq!(status, 422);
    assert_eq!(anyone, 401);
}
