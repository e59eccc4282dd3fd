//! Each scenario knob, set per session through the sandbox API, a preset name or the settings.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::{Psp, kinds};

#[tokio::test]
async fn duplicate_webhooks_delivers_each_event_twice_with_the_same_id() {
    let psp = Psp::start(&[]).await;
    let session = psp
        .stripe_session("500", "o", &[("metadata[lab_scenario]", "duplicate")])
        .await;
    let id = session["id"].as_str().unwrap();

    psp.buyer(id, "decline").await;
    let hits = psp.receiver.wait_for(2).await;

    assert_eq!(hits[0].id(), hits[1].id());
    assert_eq!(hits[0].body, hits[1].body);
    assert_eq!(
        kinds(&hits),
        [
            "payment_intent.payment_failed",
            "payment_intent.payment_failed"
        ]
    );
}

#[tokio::test]
async fn out_of_order_sends_the_second_event_of_an_approval_first() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "o", &[]).await;
    let id = session["id"].as_str().unwrap();
    psp.scenario(id, json!({"out_of_order": true})).await;

    psp.buyer(id, "approve").await;
    let hits = psp.receiver.wait_for(2).await;

    assert_eq!(
        kinds(&hits),
        [
            "payment_intent.amount_capturable_updated",
            "checkout.session.completed"
        ]
    );
}

#[tokio::test]
async fn drop_first_attempt_never_sends_it_and_the_retry_delivers_the_event() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let order = psp.paypal_order(&token, "5.00", "o", json!({})).await;
    let id = order["id"].as_str().unwrap();
    psp.scenario(id, json!({"drop_first_attempt": true})).await;

    psp.buyer(id, "decline").await;
    let hits = psp.receiver.wait_for(1).await;
    let attempts = psp.wait_attempts(id, 2).await;

    assert_eq!(hits.len(), 1);
    assert_eq!(attempts[0]["outcome"], "dropped");
    assert_eq!(attempts[1]["outcome"], "delivered");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[0]["event_id"], hits[0].id());
}

#[tokio::test]
async fn a_webhook_delay_still_delivers_every_event_in_order() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "o", &[]).await;
    let id = session["id"].as_str().unwrap();
    psp.scenario(id, json!({"webhook_delay_ms": 50})).await;

    psp.buyer(id, "approve").await;
    let hits = psp.receiver.wait_for(2).await;

    assert_eq!(
        kinds(&hits),
        [
            "checkout.session.completed",
            "payment_intent.amount_capturable_updated"
        ]
    );
}

#[tokio::test]
async fn an_authorize_amount_delta_authorizes_a_different_amount_on_both_providers() {
    let psp = Psp::start(&[]).await;
    let session = psp
        .stripe_session("500", "o", &[("metadata[lab_scenario]", "amount_mismatch")])
        .await;
    let token = psp.paypal_token().await;
    let order = psp.paypal_order(&token, "5.00", "o", json!({})).await;
    let order_id = order["id"].as_str().unwrap();
    psp.scenario(order_id, json!({"authorize_amount_delta_minor": 25}))
        .await;

    psp.buyer(session["id"].as_str().unwrap(), "approve").await;
    psp.buyer(order_id, "approve").await;
    let (_, intent) = psp
        .stripe_get(&format!(
            "/v1/payment_intents/{}",
            session["payment_intent"].as_str().unwrap()
        ))
        .await;
    let (_, order) = psp
        .paypal_get(&token, &format!("/v2/checkout/orders/{order_id}"))
        .await;

    assert_eq!(intent["amount"], 500);
    assert_eq!(intent["amount_capturable"], 499);
    assert_eq!(
        order["purchase_units"][0]["payments"]["authorizations"][0]["amount"]["value"],
        "5.25"
    );
}

#[tokio::test]
async fn fail_capture_refuses_the_stripe_capture_with_card_declined() {
    let psp = Psp::start(&[]).await;
    let session = psp
        .stripe_session("500", "o", &[("metadata[lab_scenario]", "capture_failure")])
        .await;
    let intent = session["payment_intent"].as_str().unwrap();
    psp.buyer(session["id"].as_str().unwrap(), "approve").await;

    let (status, body) = psp
        .stripe(&format!("/v1/payment_intents/{intent}/capture"), &[])
        .await;
    let hits = psp.receiver.wait_for(3).await;

    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(body["error"]["code"], "card_declined");
    assert_eq!(hits[2].kind(), "payment_intent.payment_failed");
}

#[tokio::test]
async fn fail_capture_answers_paypal_422_and_sends_capture_denied() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let order = psp
        .paypal_order(
            &token,
            "5.00",
            "o",
            json!({"lab_scenario": "capture_failure"}),
        )
        .await;
    let id = order["id"].as_str().unwrap();
    psp.buyer(id, "approve").await;
    let (_, order) = psp
        .paypal_get(&token, &format!("/v2/checkout/orders/{id}"))
        .await;
    let auth = order["purchase_units"][0]["payments"]["authorizations"][0]["id"]
        .as_str()
        .unwrap();

    let (status, body) = psp
        .paypal(
            &token,
            &format!("/v2/payments/authorizations/{auth}/capture"),
            None,
            None,
        )
        .await;
    let hits = psp.receiver.wait_for(3).await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["name"], "UNPROCESSABLE_ENTITY");
    assert_eq!(hits[2].kind(), "PAYMENT.CAPTURE.DENIED");
    assert_eq!(hits[2].json["resource"]["status"], "DECLINED");
}

#[tokio::test]
async fn auto_approve_in_the_settings_approves_every_new_session_at_once() {
    let psp = Psp::start_with(&[], |s| s.scenario.auto = lab_psp::Auto::Approve).await;
    let token = psp.paypal_token().await;

    let session = psp.stripe_session("500", "o", &[]).await;
    let order = psp.paypal_order(&token, "5.00", "o", json!({})).await;
    let hits = psp.receiver.wait_for(4).await;

    assert_eq!(session["status"], "complete");
    assert_eq!(order["status"], "COMPLETED");
    let mut kinds = kinds(&hits);
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "CHECKOUT.ORDER.APPROVED",
            "PAYMENT.AUTHORIZATION.CREATED",
            "checkout.session.completed",
            "payment_intent.amount_capturable_updated"
        ]
    );
}

#[tokio::test]
async fn the_decline_preset_declines_the_new_session_at_once() {
    let psp = Psp::start(&[]).await;

    psp.stripe_session("500", "o", &[("metadata[lab_scenario]", "decline")])
        .await;
    let hits = psp.receiver.wait_for(1).await;

    assert_eq!(kinds(&hits), ["payment_intent.payment_failed"]);
}

#[tokio::test]
async fn a_preset_name_can_be_put_as_a_sessions_scenario() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "o", &[]).await;
    let id = session["id"].as_str().unwrap();

    psp.scenario(id, json!("duplicate")).await;
    psp.buyer(id, "decline").await;
    let hits = psp.receiver.wait_for(2).await;

    assert_eq!(hits[0].id(), hits[1].id());
}
