//! PayPal webhooks: RSA signatures over the transmission string, the signing certificate fetched
//! only from an allowlisted host and trusted only when the configured CA issued it.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::Harness;

fn authorization_created(event_id: &str, order_id: Uuid) -> String {
    json!({
        "id": event_id,
        "event_type": "PAYMENT.AUTHORIZATION.CREATED",
        "create_time": chrono::Utc::now().to_rfc3339(),
        "resource_type": "authorization",
        "resource": {
            "id": "AUTH-1",
            "status": "CREATED",
            "custom_id": order_id.to_string(),
            "amount": {"currency_code": "EUR", "value": "12.34"},
        },
    })
    .to_string()
}

/// Opens a Stripe session for `order` (the PSP stand-in speaks Stripe for sessions); the
/// webhook checks do not depend on the provider of the row.
async fn opened(h: &Harness) -> Uuid {
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    order
}

#[tokio::test]
async fn a_validly_signed_paypal_authorization_is_applied_with_its_exact_amount() {
    let h = Harness::start().await;
    let order = opened(&h).await;
    let body = authorization_created("WH-1", order);

    let (status, answer) = h.paypal(&body, &h.cert_url(), false).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "applied");
    let seen = h.bus.until("payments.authorized").await;
    assert_eq!(seen.last().unwrap().payload["amount"]["amount_minor"], 1234);
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["authorization_id"], "AUTH-1");
}

#[tokio::test]
async fn the_certificate_is_fetched_once_for_many_webhooks() {
    let h = Harness::start().await;
    let order = opened(&h).await;

    for n in 0..3 {
        let body = authorization_created(&format!("WH-many-{n}"), order);
        let (status, _) = h.paypal(&body, &h.cert_url(), false).await;
        assert_eq!(status, 200);
    }

    assert_eq!(h.cert_fetches(), 1);
}

#[tokio::test]
async fn a_bad_signature_is_refused_and_nothing_is_recorded() {
    let h = Harness::start().await;
    let order = opened(&h).await;
    let body = authorization_created("WH-bad", order);

    let (status, problem) = h.paypal(&body, &h.cert_url(), true).await;

    assert_eq!(status, 400);
    assert_eq!(problem["type"], "urn:lab:problem:webhook-signature");
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "session_created");
    assert!(
        payment["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"] == "command")
    );
}

#[tokio::test]
async fn a_cert_url_on_a_host_not_allowed_is_refused_without_fetching_it() {
    let h = Harness::start().await;
    let order = opened(&h).await;
    let body = authorization_created("WH-host", order);
    // The same server under another name: not on the allowlist.
    let elsewhere = h.cert_url().replace("127.0.0.1", "localhost");

    let (status, problem) = h.paypal(&body, &elsewhere, false).await;

    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("not allowed"),
        "{problem}"
    );
    assert_eq!(h.cert_fetches(), 0);
}

#[tokio::test]
async fn a_certificate_not_issued_by_the_configured_ca_is_refused() {
    let h = Harness::start().await;
    let order = opened(&h).await;
    let body = authorization_created("WH-rogue", order);
    let rogue = format!("{}/certs/rogue.pem", h.psp_url);

    let (status, problem) = h.paypal(&body, &rogue, false).await;

    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("trusted CA"),
        "{problem}"
    );
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "session_created");
}

#[tokio::test]
async fn missing_transmission_headers_are_a_400_problem() {
    let h = Harness::start().await;

    let response = h
        .app
        .client
        .post(h.app.url("/webhooks/paypal"))
        .body("{}")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
}
