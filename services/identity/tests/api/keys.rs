//! Signing keys: created in OpenBao on first start, published as a JWKS, rotated by one admin
//! call without invalidating tokens already issued.

use serde_json::{Value, json};

use crate::helpers::{ADMIN_EMAIL, OtherService, post, signed_in, spawn_app};

fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&lab_auth::jwt::b64url_decode(header).expect("b64")).expect("json");
    assert_eq!(header["alg"], "EdDSA");
    header["kid"].as_str().expect("kid").to_owned()
}

#[tokio::test]
async fn the_jwks_publishes_the_ed25519_key_identity_stored_in_openbao() {
    let app = spawn_app().await;
    let stored = crate::refusals::identity_key(&app).await;

    let (status, jwks) = app.get_json("/.well-known/jwks.json").await;

    assert_eq!(status, 200);
    assert_eq!(
        jwks["keys"],
        json!([{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
            "kid": stored.kid(), "x": lab_auth::jwt::b64url(stored.public_key()),
        }])
    );
}

#[tokio::test]
async fn a_restarted_identity_keeps_the_key_from_openbao() {
    let app = spawn_app().await;
    let (token, _) = signed_in(&app, "stay@example.com").await;

    let again = app
        .env
        .spawn(lab_identity::build, crate::helpers::settings(&app.env))
        .await;
    let me = again
        .client
        .get(again.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("GET /me");

    assert_eq!(me.status(), 200);
}

#[tokio::test]
async fn after_a_rotation_old_tokens_stay_valid_and_new_ones_carry_the_new_kid() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (admin, _) = signed_in(&app, ADMIN_EMAIL).await;
    let (old_token, _) = signed_in(&app, "before@example.com").await;
    assert_eq!(other.get("/whoami", &old_token).await.0, 200);

    let (status, rotated) = post(&app, "/admin/keys/rotate", json!({}), Some(&admin)).await;
    let new_token = crate::helpers::login(&app, "before@example.com").await["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let (_, jwks) = app.get_json("/.well-known/jwks.json").await;
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();

    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["previous_kid"], kid_of(&old_token));
    assert_eq!(kid_of(&new_token), rotated["kid"]);
    assert_eq!(
        kids,
        vec![
            rotated["kid"].as_str().expect("kid"),
            rotated["previous_kid"].as_str().expect("kid")
        ]
    );
    assert_eq!(
        other.get("/whoami", &old_token).await.0,
        200,
        "the old key's token must stay valid"
    );
    // The other service fetched the key set moments ago; it fetches again for an unknown kid
    // only once its minimum refresh interval (50 ms here) has passed.
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    let (new_status, challenge, new_body) = other.get("/whoami", &new_token).await;
    assert_eq!(
        new_status, 200,
        "the new kid must be fetched: {challenge:?} {new_body}"
    );
    let stored = crate::refusals::identity_key(&app).await;
    assert_eq!(stored.kid(), rotated["kid"]);
}

#[tokio::test]
async fn only_an_admin_may_rotate_the_keys() {
    let app = spawn_app().await;
    let (token, _) = signed_in(&app, "nobody@example.com").await;

    let (status, body) = post(&app, "/admin/keys/rotate", json!({}), Some(&token)).await;
    let (anonymous, _) = post(&app, "/admin/keys/rotate", json!({}), None).await;

    assert_eq!(status, 403, "{body}");
    assert_eq!(anonymous, 401);
}

#[tokio::test]
async fn two_replicas_starting_at_once_against_an_empty_openbao_agree_on_one_key() {
    let env = crate::helpers::env().await;

    let (first, second) = tokio::join!(
        env.spawn(lab_identity::build, crate::helpers::settings(&env)),
        env.spawn(lab_identity::build, crate::helpers::settings(&env)),
    );
    let (_, first_jwks) = first.get_json("/.well-known/jwks.json").await;
    let (_, second_jwks) = second.get_json("/.well-known/jwks.json").await;

    assert_eq!(first_jwks["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(first_jwks, second_jwks);
}

#[tokio::test]
async fn two_rotations_in_a_row_keep_every_key_whose_tokens_may_be_alive() {
    let app = spawn_app().await;
    let other = OtherService::start(&app).await;
    let (admin, _) = signed_in(&app, ADMIN_EMAIL).await;
    let (first_token, _) = signed_in(&app, "early@example.com").await;

    let (first, _) = post(&app, "/admin/keys/rotate", json!({}), Some(&admin)).await;
    let (second, rotated) = post(&app, "/admin/keys/rotate", json!({}), Some(&admin)).await;
    let (_, jwks) = app.get_json("/.well-known/jwks.json").await;

    assert_eq!((first, second), (200, 200), "{rotated}");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(3), "{jwks}");
    assert_eq!(
        other.get("/whoami", &first_token).await.0,
        200,
        "a token of the key retired two rotations ago is still within its lifetime"
    );
}
