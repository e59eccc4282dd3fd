//! Revocation through Redis: refused within a second everywhere, after a restart, and after a
//! subscriber missed the message while disconnected.

use std::time::Duration;

use lab_auth::Revocations;
use lab_cache::redis;
use lab_test_support::{TestEnv, eventually};
use tokio_util::sync::CancellationToken;

use crate::helpers::{JwksServer, call, claims, key, now, service, verifier};

#[tokio::test]
async fn a_revocation_reaches_another_verifier_within_a_second() {
    let env = TestEnv::builder().start().await;
    let signer = key();
    let jwks = JwksServer::start(&[&signer]).await;
    let shutdown = CancellationToken::new();
    let router = service(verifier(&env, &jwks.url, 5_000, &shutdown));
    let c = claims();
    let token = signer.sign(&c).expect("sign");
    assert_eq!(call(&router, "/whoami", Some(&token)).await.0, 200);
    let issuer_side = Revocations::new(&env.redis()).expect("revocations");

    issuer_side.revoke(&c.jti, c.exp).await.expect("revoke");
    let refused = eventually(Duration::from_secs(1), || async {
        let (status, _, body) = call(&router, "/whoami", Some(&token)).await;
        (status == 401 && body["detail"] == "the token has been revoked").then_some(())
    })
    .await;

    assert!(
        refused.is_some(),
        "still accepted a second after the revocation"
    );
}

#[tokio::test]
async fn a_verifier_started_after_the_revocation_refuses_the_token_from_its_first_request() {
    let env = TestEnv::builder().start().await;
    let signer = key();
    let jwks = JwksServer::start(&[&signer]).await;
    let c = claims();
    let token = signer.sign(&c).expect("sign");
    Revocations::new(&env.redis())
        .expect("revocations")
        .revoke(&c.jti, c.exp)
        .await
        .expect("revoke");

    let shutdown = CancellationToken::new();
    let router = service(verifier(&env, &jwks.url, 5_000, &shutdown));
    let (status, _, body) = call(&router, "/whoami", Some(&token)).await;

    assert_eq!(status, 401, "{body}");
    assert_eq!(body["detail"], "the token has been revoked");
}

#[tokio::test]
async fn a_revocation_missed_while_disconnected_is_loaded_when_the_subscriber_reconnects() {
    let env = TestEnv::builder().with_private_redis().start().await;
    let shutdown = CancellationToken::new();
    let follower = Revocations::new(&env.redis()).expect("revocations");
    follower.spawn_subscriber(shutdown.clone());
    let synced = eventually(Duration::from_secs(5), || async {
        follower.synced().then_some(())
    })
    .await;
    assert!(synced.is_some(), "the subscriber never synced");
    // Written behind the subscriber's back: stored as identity stores it, but never published.
    let jti = "missed-while-away";
    let exp = now() + 600;
    let client = redis::Client::open(env.redis().url).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    let prefix = env.redis_prefix();
    let _: () = redis::pipe()
        .cmd("SET")
        .arg(format!("{prefix}auth:revoked:{jti}"))
        .arg(exp)
        .arg("EXAT")
        .arg(exp)
        .ignore()
        .cmd("ZADD")
        .arg(format!("{prefix}auth:revoked"))
        .arg(exp)
        .arg(jti)
        .ignore()
        .query_async(&mut conn)
        .await
        .expect("write");
    assert!(
        !follower.is_revoked(jti).await,
        "a synced follower answers from its local set"
    );

    let _: () = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .map(|_: i64| ())
        .expect("kill the subscriber's connection");
    let caught_up = eventually(Duration::from_secs(5), || async {
        (follower.synced() && follower.is_revoked(jti).await).then_some(())
    })
    .await;

    assert!(
        caught_up.is_some(),
        "the reconnected subscriber did not reload the list"
    );
}

#[tokio::test]
async fn an_already_expired_token_needs_no_revocation_entry() {
    let env = TestEnv::builder().start().await;
    let revocations = Revocations::new(&env.redis()).expect("revocations");

    revocations
        .revoke("long-gone", now() - 10)
        .await
        .expect("revoke");

    assert!(!revocations.is_revoked("long-gone").await);
}
