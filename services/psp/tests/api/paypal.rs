//! The PayPal-like API: an order from creation to refund, void, decline, request ids, auth.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{CLIENT_ID, Psp, kinds};

/// The id of the order's first authorization.
fn authorization(order: &Value) -> &str {
    order["purchase_units"][0]["payments"]["authorizations"][0]["id"]
        .as_str()
        .unwrap()
}

#[tokio::test]
async fn an_order_is_approved_authorized_captured_and_refunded_with_a_webhook_for_each_step() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let order = psp
        .paypal_order(&token, "12.34", "order-1", json!({}))
        .await;
    let id = order["id"].as_str().unwrap();
    let approve_link = order["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "approve")
        .unwrap()["href"]
        .clone();

    psp.buyer(id, "approve").await;
    let (_, approved) = psp
        .paypal_get(&token, &format!("/v2/checkout/orders/{id}"))
        .await;
    let auth = authorization(&approved);
    let (capture_status, capture) = psp
        .paypal(
            &token,
            &format!("/v2/payments/authorizations/{auth}/capture"),
            None,
            None,
        )
        .await;
    let capture_id = capture["id"].as_str().unwrap();
    let (refund_status, refund) = psp
        .paypal(
            &token,
            &format!("/v2/payments/captures/{capture_id}/refund"),
            Some(&json!({"amount": {"currency_code": "EUR", "value": "2.34"}})),
            None,
        )
        .await;
    let hits = psp.receiver.wait_for(4).await;

    assert_eq!(order["status"], "CREATED");
    assert!(
        approve_link
            .as_str()
            .unwrap()
            .ends_with(&format!("/pay/{id}"))
    );
    assert_eq!(approved["status"], "COMPLETED");
    assert_eq!(
        approved["purchase_units"][0]["payments"]["authorizations"][0]["status"],
        "CREATED"
    );
    assert_eq!(capture_status, StatusCode::CREATED, "{capture:#}");
    assert_eq!(capture["status"], "COMPLETED");
    assert_eq!(capture["amount"]["value"], "12.34");
    assert_eq!(refund_status, StatusCode::CREATED, "{refund:#}");
    assert_eq!(refund["amount"]["value"], "2.34");
    assert_eq!(
        kinds(&hits),
        [
            "CHECKOUT.ORDER.APPROVED",
            "PAYMENT.AUTHORIZATION.CREATED",
            "PAYMENT.CAPTURE.COMPLETED",
            "PAYMENT.CAPTURE.REFUNDED"
        ]
    );
    let approve_href = hits[0].json["resource"]["links"][1]["href"]
        .as_str()
        .unwrap();
    assert!(approve_href.starts_with("http://"), "{approve_href}");
    for hit in &hits {
        assert_eq!(
            hit.json["resource"]["custom_id"], "order-1",
            "{:#}",
            hit.json
        );
        assert_eq!(hit.json["resource"]["amount"]["currency_code"], "EUR");
    }
}

#[tokio::test]
async fn a_voided_authorization_sends_voided_and_can_no_longer_be_captured() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let order = psp.paypal_order(&token, "5.00", "order-2", json!({})).await;
    let id = order["id"].as_str().unwrap();
    psp.buyer(id, "approve").await;
    let (_, approved) = psp
        .paypal_get(&token, &format!("/v2/checkout/orders/{id}"))
        .await;
    let auth = authorization(&approved);

    let (void_status, voided) = psp
        .paypal(
            &token,
            &format!("/v2/payments/authorizations/{auth}/void"),
            None,
            None,
        )
        .await;
    let (capture_status, body) = psp
        .paypal(
            &token,
            &format!("/v2/payments/authorizations/{auth}/capture"),
            None,
            None,
        )
        .await;
    let hits = psp.receiver.wait_for(3).await;

    assert_eq!(void_status, StatusCode::OK);
    assert_eq!(voided["status"], "VOIDED");
    assert_eq!(capture_status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["name"], "UNPROCESSABLE_ENTITY");
    assert_eq!(body["details"][0]["issue"], "AUTHORIZATION_VOIDED");
    assert_eq!(kinds(&hits)[2], "PAYMENT.AUTHORIZATION.VOIDED");
}

#[tokio::test]
async fn a_declined_order_sends_payment_approval_reversed() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let order = psp.paypal_order(&token, "5.00", "order-3", json!({})).await;

    let (status, outcome) = psp.buyer(order["id"].as_str().unwrap(), "decline").await;
    let hits = psp.receiver.wait_for(1).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(outcome["status"], "VOIDED");
    assert_eq!(kinds(&hits), ["CHECKOUT.PAYMENT-APPROVAL.REVERSED"]);
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_first_order_and_other_content_is_refused() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let body = |value: &str| json!({"intent": "AUTHORIZE", "purchase_units": [{"custom_id": "o", "amount": {"currency_code": "EUR", "value": value}}]});

    let (_, first) = psp
        .paypal(
            &token,
            "/v2/checkout/orders",
            Some(&body("1.00")),
            Some("req-1"),
        )
        .await;
    let (status, second) = psp
        .paypal(
            &token,
            "/v2/checkout/orders",
            Some(&body("1.00")),
            Some("req-1"),
        )
        .await;
    let (conflict, error) = psp
        .paypal(
            &token,
            "/v2/checkout/orders",
            Some(&body("2.00")),
            Some("req-1"),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(first["id"], second["id"]);
    assert_eq!(conflict, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error["details"][0]["issue"], "DUPLICATE_REQUEST_ID");
}

#[tokio::test]
async fn wrong_client_credentials_and_an_unknown_token_are_401_authentication_failure() {
    let psp = Psp::start(&[]).await;

    let token = psp
        .app
        .client
        .post(psp.app.url("/paypal/v1/oauth2/token"))
        .basic_auth(CLIENT_ID, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let (status, body) = psp
        .paypal("not-a-token", "/v2/checkout/orders", Some(&json!({})), None)
        .await;

    assert_eq!(token.status().as_u16(), 401);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["name"], "AUTHENTICATION_FAILURE");
}

#[tokio::test]
async fn an_unknown_authorization_is_404_resource_not_found() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;

    let (status, body) = psp
        .paypal(
            &token,
            "/v2/payments/authorizations/NOPE/capture",
            None,
            None,
        )
        .await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["name"], "RESOURCE_NOT_FOUND");
    assert!(body["debug_id"].is_string());
}
