//! Idempotent claims: the first writer wins, repeats get its id, an expired claim is taken
//! again, reads never create.

use lab_test_support::TestApp;
use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn claim(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/claims"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Makes the claim on `key` expired, as if its TTL had passed (no sleeping in tests).
async fn expire(app: &TestApp, key: &str) {
    let mut conn = app.env.db().admin_connection().await.unwrap();
    let expired = sqlx::query(
        "UPDATE orders.claims SET claimed_at = now() - interval '2 minutes', \
         expires_at = now() - interval '1 second' WHERE scope = 'claims' AND key = $1",
    )
    .bind(key)
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(expired.rows_affected(), 1);
}

#[tokio::test]
async fn the_first_claim_wins_and_every_repeat_gets_the_same_id_not_created() {
    let app = spawn_app().await;

    let (first_status, first) = claim(&app, json!({"key": "pay-42", "ttl_s": 60})).await;
    let (second_status, second) = claim(&app, json!({"key": "pay-42", "ttl_s": 600})).await;
    let (third_status, third) = claim(&app, json!({"key": "pay-42", "ttl_s": 60})).await;

    assert_eq!(first_status, 201);
    assert_eq!(first["created"], true);
    assert_eq!((second_status, third_status), (200, 200));
    assert_eq!(second["created"], false);
    assert_eq!(third["created"], false);
    assert_eq!(second["claim_id"], first["claim_id"]);
    assert_eq!(third["claim_id"], first["claim_id"]);
    assert_eq!(
        second["expires_at"], first["expires_at"],
        "a repeat does not extend the claim"
    );
}

#[tokio::test]
async fn concurrent_claims_of_one_key_have_exactly_one_winner() {
    let app = spawn_app().await;

    let attempts = (0..10).map(|_| claim(&app, json!({"key": "race", "ttl_s": 60})));
    let results = futures::future::join_all(attempts).await;

    let created = results.iter().filter(|(_, b)| b["created"] == true).count();
    let ids: std::collections::BTreeSet<String> = results
        .iter()
        .map(|(_, b)| b["claim_id"].to_string())
        .collect();
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1, "everyone got the winner's claim id");
}

#[tokio::test]
async fn an_expired_claim_is_taken_again_with_a_new_id() {
    let app = spawn_app().await;
    let (_, first) = claim(&app, json!({"key": "nightly", "ttl_s": 5})).await;
    expire(&app, "nightly").await;

    let (status, again) = claim(&app, json!({"key": "nightly", "ttl_s": 5})).await;
    let (_, repeat) = claim(&app, json!({"key": "nightly", "ttl_s": 5})).await;

    assert_eq!(status, 201);
    assert_eq!(again["created"], true);
    assert_eq!(again["retaken"], true);
    assert_ne!(again["claim_id"], first["claim_id"]);
    assert_eq!(repeat["created"], false);
    assert_eq!(repeat["claim_id"], again["claim_id"]);
}

#[tokio::test]
async fn reading_a_claim_shows_it_and_never_creates_one() {
    let app = spawn_app().await;
    let (_, made) = claim(&app, json!({"key": "a key/with spaces", "ttl_s": 30})).await;

    let (absent_status, absent) = app.get_json("/claims/nobody-claimed-this").await;
    let (absent_again, _) = app.get_json("/claims/nobody-claimed-this").await;
    let (status, read) = app.get_json("/claims/a%20key%2Fwith%20spaces").await;
    let (_, after) = claim(&app, json!({"key": "nobody-claimed-this", "ttl_s": 30})).await;

    assert_eq!(absent_status, 404);
    assert_eq!(absent["status"], 404);
    assert_eq!(absent_again, 404);
    assert_eq!(after["created"], true, "the reads created nothing");
    assert_eq!(status, 200);
    assert_eq!(read["exists"], true);
    assert_eq!(read["claim_id"], made["claim_id"]);
    assert_eq!(read["expired"], false);
    assert!(read["age_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(read["expires_at"], made["expires_at"]);
}

#[tokio::test]
async fn bad_keys_and_ttls_are_422_naming_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"key": "", "ttl_s": 60}), "key"),
        (json!({"key": "x".repeat(256), "ttl_s": 60}), "key"),
        (json!({"key": "tab\there", "ttl_s": 60}), "key"),
        (json!({"key": "k", "ttl_s": 4}), "ttl_s"),
        (json!({"key": "k", "ttl_s": 86_401}), "ttl_s"),
    ];

    for (body, field) in cases {
        let (status, problem) = claim(&app, body.clone()).await;

        assert_eq!(status, 422, "{body}");
        assert_eq!(problem["field"], field, "{body}");
    }
    let (status, _) = app.get_json("/claims/k").await;
    assert_eq!(status, 404, "no invalid request left a claim behind");
}
