//! The Stripe-like API: a session from creation to refund, decline, expiry, idempotency, auth.

use axum::http::StatusCode;
use serde_json::Value;

use crate::helpers::{Psp, kinds};

#[tokio::test]
async fn a_session_is_approved_captured_and_refunded_with_a_webhook_for_each_step() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("1234", "order-1", &[]).await;
    let id = session["id"].as_str().unwrap();
    let intent = session["payment_intent"].as_str().unwrap();
    assert_eq!(session["status"], "open");
    assert!(
        session["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/pay/{id}"))
    );

    let (status, outcome) = psp.buyer(id, "approve").await;
    assert_eq!(status, StatusCode::OK, "{outcome:#}");
    let (_, approved) = psp
        .stripe_get(&format!("/v1/payment_intents/{intent}"))
        .await;
    let (status, captured) = psp
        .stripe(&format!("/v1/payment_intents/{intent}/capture"), &[])
        .await;
    let (status_refund, refund) = psp
        .stripe(
            "/v1/refunds",
            &[("payment_intent", intent), ("amount", "234")],
        )
        .await;
    let hits = psp.receiver.wait_for(4).await;

    assert_eq!(approved["status"], "requires_capture");
    assert_eq!(approved["amount_capturable"], 1234);
    assert_eq!(status, StatusCode::OK, "{captured:#}");
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount_received"], 1234);
    assert_eq!(status_refund, StatusCode::OK, "{refund:#}");
    assert_eq!(refund["amount"], 234);
    assert!(refund["id"].as_str().unwrap().starts_with("re_"));
    assert_eq!(
        kinds(&hits),
        [
            "checkout.session.completed",
            "payment_intent.amount_capturable_updated",
            "payment_intent.succeeded",
            "charge.refunded"
        ]
    );
    for hit in &hits[1..3] {
        let object = &hit.json["data"]["object"];
        assert_eq!(object["metadata"]["order_id"], "order-1");
        assert_eq!(object["currency"], "eur");
        assert_eq!(object["amount"], 1234);
    }
}

#[tokio::test]
async fn a_declined_session_fails_its_intent_and_stays_open_for_another_try() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "order-2", &[]).await;
    let id = session["id"].as_str().unwrap();

    let (status, _) = psp.buyer(id, "decline").await;
    let hits = psp.receiver.wait_for(1).await;
    let (_, now) = psp.stripe_get(&format!("/v1/checkout/sessions/{id}")).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(kinds(&hits), ["payment_intent.payment_failed"]);
    let intent = &hits[0].json["data"]["object"];
    assert_eq!(intent["status"], "requires_payment_method");
    assert_eq!(intent["last_payment_error"]["code"], "card_declined");
    assert_eq!(now["status"], "open");
}

#[tokio::test]
async fn capturing_an_intent_that_was_never_approved_is_payment_intent_unexpected_state() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "order-3", &[]).await;
    let intent = session["payment_intent"].as_str().unwrap();

    let (status, body) = psp
        .stripe(&format!("/v1/payment_intents/{intent}/capture"), &[])
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "payment_intent_unexpected_state");
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_refund_of_an_uncaptured_intent_and_a_second_capture_are_refused() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "order-4", &[]).await;
    let intent = session["payment_intent"].as_str().unwrap();
    psp.buyer(session["id"].as_str().unwrap(), "approve").await;

    let (refund_status, refund) = psp
        .stripe("/v1/refunds", &[("payment_intent", intent)])
        .await;
    psp.stripe(&format!("/v1/payment_intents/{intent}/capture"), &[])
        .await;
    let (again, body) = psp
        .stripe(&format!("/v1/payment_intents/{intent}/capture"), &[])
        .await;

    assert_eq!(refund_status, StatusCode::BAD_REQUEST, "{refund:#}");
    assert_eq!(again, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "payment_intent_unexpected_state");
}

#[tokio::test]
async fn a_canceled_intent_sends_payment_intent_canceled_and_cannot_be_approved() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "order-5", &[]).await;
    let intent = session["payment_intent"].as_str().unwrap();

    let (status, canceled) = psp
        .stripe(&format!("/v1/payment_intents/{intent}/cancel"), &[])
        .await;
    let (approve, _) = psp.buyer(session["id"].as_str().unwrap(), "approve").await;
    let hits = psp.receiver.wait_for(1).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(approve, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(kinds(&hits), ["payment_intent.canceled"]);
}

#[tokio::test]
async fn an_open_session_expires_by_itself_past_expires_at() {
    let psp = Psp::start(&[]).await;
    let soon = (chrono::Utc::now().timestamp() + 1).to_string();
    let session = psp
        .stripe_session("500", "order-6", &[("expires_at", &soon)])
        .await;
    let id = session["id"].as_str().unwrap();

    let hits = psp.receiver.wait_for(1).await;
    let (_, now) = psp.stripe_get(&format!("/v1/checkout/sessions/{id}")).await;

    assert_eq!(kinds(&hits), ["checkout.session.expired"]);
    assert_eq!(now["status"], "expired");
}

#[tokio::test]
async fn expiring_a_session_by_hand_works_once_and_then_is_unexpected_state() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "order-7", &[]).await;
    let id = session["id"].as_str().unwrap();

    let (first, expired) = psp
        .stripe(&format!("/v1/checkout/sessions/{id}/expire"), &[])
        .await;
    let (second, body) = psp
        .stripe(&format!("/v1/checkout/sessions/{id}/expire"), &[])
        .await;

    assert_eq!(first, StatusCode::OK);
    assert_eq!(expired["status"], "expired");
    assert_eq!(second, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn a_repeated_idempotency_key_returns_the_first_session_and_creates_no_other() {
    let psp = Psp::start(&[]).await;
    let form = [
        ("amount", "700"),
        ("currency", "eur"),
        ("metadata[order_id]", "order-8"),
    ];

    let (_, first) = psp
        .stripe_with(
            "/v1/checkout/sessions",
            &form,
            crate::helpers::SECRET_KEY,
            Some("key-1"),
        )
        .await;
    let (status, second) = psp
        .stripe_with(
            "/v1/checkout/sessions",
            &form,
            crate::helpers::SECRET_KEY,
            Some("key-1"),
        )
        .await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["id"], second["id"]);
    assert_ne!(first["id"], Value::Null);
}

#[tokio::test]
async fn an_idempotency_key_reused_with_other_parameters_is_an_idempotency_error() {
    let psp = Psp::start(&[]).await;
    let key = crate::helpers::SECRET_KEY;
    psp.stripe_with(
        "/v1/checkout/sessions",
        &[("amount", "700"), ("currency", "eur")],
        key,
        Some("key-2"),
    )
    .await;

    let (status, body) = psp
        .stripe_with(
            "/v1/checkout/sessions",
            &[("amount", "701"), ("currency", "eur")],
            key,
            Some("key-2"),
        )
        .await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "idempotency_error");
}

#[tokio::test]
async fn a_wrong_or_missing_api_key_is_401_in_stripes_shape() {
    let psp = Psp::start(&[]).await;
    let form = [("amount", "700"), ("currency", "eur")];

    let (wrong, body) = psp
        .stripe_with("/v1/checkout/sessions", &form, "sk_test_wrong", None)
        .await;
    let missing = psp
        .app
        .client
        .get(psp.app.url("/stripe/v1/payment_intents/pi_x"))
        .send()
        .await
        .unwrap();

    assert_eq!(wrong, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(missing.status().as_u16(), 401);
}

#[tokio::test]
async fn the_secret_key_is_also_accepted_as_the_basic_auth_user_as_curl_sends_it() {
    let psp = Psp::start(&[]).await;

    let response = psp
        .app
        .client
        .get(psp.app.url("/stripe/v1/payment_intents/pi_unknown"))
        .basic_auth(crate::helpers::SECRET_KEY, Some(""))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 404);
}
