//! Tokens checked against a JWKS fetched over HTTP: what passes, what is refused and how, and
//! how often the key set is fetched.

use std::time::Duration;

use lab_auth::Audience;
use lab_test_support::TestEnv;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Protected, call, claims, key, now, service, verifier};

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_its_subject_roles_and_scopes() {
    let signer = key();
    let app = Protected::start(&[&signer], 5_000).await;
    let mut c = claims();
    c.roles = vec!["admin".into()];
    c.scope = "demo orders:read".into();
    let token = signer.sign(&c).expect("sign");

    let (status, _, body) = app.call("/whoami", Some(&token)).await;
    let (admin, _, _) = app.call("/admin", Some(&token)).await;
    let (demo, _, _) = app.call("/demo", Some(&token)).await;

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sub"], "user-1");
    assert_eq!(body["roles"], serde_json::json!(["admin"]));
    assert_eq!(body["scopes"], serde_json::json!(["demo", "orders:read"]));
    assert_eq!((admin, demo), (200, 200));
}

#[tokio::test]
async fn tokens_failing_a_claim_check_get_401_naming_the_reason() {
    let signer = key();
    let app = Protected::start(&[&signer], 5_000).await;
    let mut wrong_issuer = claims();
    wrong_issuer.iss = "evil".into();
    let mut wrong_audience = claims();
    wrong_audience.aud = Audience::Many(vec!["bff".into(), "payments".into()]);
    let mut expired = claims();
    expired.exp = now() - 120;
    let mut early = claims();
    early.nbf = Some(now() + 3_600);

    for (claims, reason) in [
        (wrong_issuer, "issued by"),
        (wrong_audience, "audience"),
        (expired, "expired"),
        (early, "not valid yet"),
    ] {
        let token = signer.sign(&claims).expect("sign");
        let (status, challenge, body) = app.call("/whoami", Some(&token)).await;
        assert_eq!(status, 401, "{body}");
        assert!(
            challenge.starts_with("Bearer realm=\"lab\", error=\"invalid_token\""),
            "{challenge}"
        );
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(reason)),
            "{reason}: {body}"
        );
    }
}

#[tokio::test]
async fn an_expiry_within_the_leeway_is_still_accepted() {
    let signer = key();
    let app = Protected::start(&[&signer], 5_000).await;
    let mut c = claims();
    // The default leeway is 30 s.
    c.exp = now() - 5;

    let status = app.whoami(&signer, &c).await;

    assert_eq!(status, 200);
}

#[tokio::test]
async fn no_token_or_a_non_bearer_scheme_is_401_with_a_plain_challenge() {
    let app = Protected::start(&[&key()], 5_000).await;

    let (status, challenge, body) = app.call("/whoami", None).await;

    assert_eq!(status, 401);
    assert_eq!(challenge, "Bearer realm=\"lab\"");
    assert_eq!(body["type"], "urn:lab:problem:unauthenticated");
}

#[tokio::test]
async fn a_missing_role_or_scope_is_403_with_insufficient_scope() {
    let signer = key();
    let app = Protected::start(&[&signer], 5_000).await;
    let mut scoped = claims();
    scoped.scope = "catalog:read".into();
    let token = signer.sign(&scoped).expect("sign");

    let (admin, admin_challenge, _) = app.call("/admin", Some(&token)).await;
    let (demo, demo_challenge, body) = app.call("/demo", Some(&token)).await;

    assert_eq!(admin, 403);
    assert!(admin_challenge.contains("insufficient_scope"));
    assert_eq!(demo, 403, "{body}");
    assert!(
        demo_challenge.contains("scope=\"demo\""),
        "{demo_challenge}"
    );
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_key_set_at_most_once_per_interval() {
    let signer = key();
    let app = Protected::start(&[&signer], 60_000).await;

    for _ in 0..20 {
        let token = key().sign(&claims()).expect("sign");
        let (status, _, body) = app.call("/whoami", Some(&token)).await;
        assert_eq!(status, 401);
        assert!(
            body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("unknown key")),
            "{body}"
        );
    }
    let known = app.whoami(&signer, &claims()).await;

    assert_eq!(app.jwks.fetches(), 1);
    assert_eq!(known, 200);
}

#[tokio::test]
async fn a_token_from_a_rotated_key_makes_the_cache_fetch_the_new_set() {
    let old = key();
    let app = Protected::start(&[&old], 0).await;
    let before = app.whoami(&old, &claims()).await;
    let new = key();

    app.jwks.publish(&[&new, &old]);
    let new_status = app.whoami(&new, &claims()).await;
    let old_status = app.whoami(&old, &claims()).await;

    assert_eq!((before, new_status, old_status), (200, 200, 200));
    assert_eq!(app.jwks.fetches(), 2);
}

#[tokio::test]
async fn with_identity_unreachable_and_no_keys_a_token_gets_503_not_401() {
    let env = TestEnv::builder().start().await;
    let shutdown = CancellationToken::new();
    let url = format!(
        "{}/.well-known/jwks.json",
        lab_test_support::closed_port_url("http")
    );
    let router = service(verifier(&env, &url, 0, &shutdown));

    let (status, _, body) = tokio::time::timeout(
        Duration::from_secs(10),
        call(
            &router,
            "/whoami",
            Some(&key().sign(&claims()).expect("sign")),
        ),
    )
    .await
    .expect("answered in time");

    assert_eq!(status, 503, "{body}");
    assert_eq!(body["dependency"], "identity");
}
