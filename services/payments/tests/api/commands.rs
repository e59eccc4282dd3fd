//! The saga's commands against the in-test PSP: a session opened, authorized by webhook and
//! captured; voids and refunds at each stage; a void that comes before its session; repeats.

use std::time::Duration;

use lab_contracts::{CapturePayment, CreatePaymentSession, Money, RefundPayment, VoidPayment};
use uuid::Uuid;

use crate::helpers::{Harness, STRIPE_OLD, now, stripe_event, stripe_signature};

const QUIET: Duration = Duration::from_millis(1_500);

fn eur(minor: i64) -> Money {
    Money {
        amount_minor: minor,
        currency: "EUR".into(),
    }
}

/// The saga's `CreatePaymentSession` for 12.34 EUR at `provider`, open for half an hour.
fn create_session(order: Uuid, provider: &str) -> CreatePaymentSession {
    CreatePaymentSession {
        order_id: order,
        amount: eur(1234),
        provider: provider.into(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
    }
}

/// The saga's `CapturePayment` of the 12.34 EUR authorized for `order`.
async fn capture(h: &Harness, order: Uuid) {
    h.bus
        .send(&CapturePayment {
            order_id: order,
            amount: eur(1234),
        })
        .await;
}

/// The saga's `RefundPayment` for `order`.
async fn refund(h: &Harness, order: Uuid, reason: &str) {
    h.bus
        .send(&RefundPayment {
            order_id: order,
            reason: reason.into(),
        })
        .await;
}

/// Opens a Stripe session for a new order and authorizes it by webhook.
async fn authorized(h: &Harness) -> Uuid {
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event(
        &format!("evt_auth_{order}"),
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );
    let (status, _) = h
        .stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;
    assert_eq!(status, 200);
    h.bus.until("payments.authorized").await;
    order
}

#[tokio::test]
async fn a_session_authorized_by_webhook_is_captured_on_command() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();

    let created = h.open_session(order, "stripe", 1234).await;
    assert_eq!(created["session_id"], format!("cs_test_{order}"));
    assert!(
        created["payment_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/pay/cs_test_{order}"))
    );
    let body = stripe_event(
        "evt_e2e",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );
    h.stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;
    h.bus.until("payments.authorized").await;
    capture(&h, order).await;

    let seen = h.bus.until("payments.captured").await;
    assert_eq!(seen.last().unwrap().payload["amount"]["amount_minor"], 1234);
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "captured");
    assert_eq!(payment["captured_minor"], 1234);
    assert!(h.calls().contains(&format!("capture lab-{order}-capture")));
}

#[tokio::test]
async fn a_capture_the_psp_refuses_answers_payment_capture_failed() {
    let h = Harness::start().await;
    let order = authorized(&h).await;
    h.psp.lock().unwrap().fail_capture = true;

    capture(&h, order).await;

    let seen = h.bus.until("payments.capture-failed").await;
    assert!(
        seen.last().unwrap().payload["reason"]
            .as_str()
            .unwrap()
            .contains("refused")
    );
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "authorized");
}

#[tokio::test]
async fn voiding_an_open_session_expires_it_at_the_psp() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;

    h.bus.send(&VoidPayment { order_id: order }).await;

    h.bus.until("payments.voided").await;
    assert!(h.calls().contains(&format!("expire lab-{order}-expire")));
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "voided");
}

#[tokio::test]
async fn refunding_a_payment_only_authorized_voids_the_authorization() {
    let h = Harness::start().await;
    let order = authorized(&h).await;

    refund(&h, order, "out of stock").await;

    h.bus.until("payments.voided").await;
    assert!(h.calls().contains(&format!("cancel lab-{order}-cancel")));
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "voided");
}

#[tokio::test]
async fn refunding_a_captured_payment_refunds_it_and_records_the_refund_id() {
    let h = Harness::start().await;
    let order = authorized(&h).await;
    capture(&h, order).await;
    h.bus.until("payments.captured").await;

    refund(&h, order, "requires review").await;

    let seen = h.bus.until("payments.refunded").await;
    assert_eq!(seen.last().unwrap().payload["amount"]["amount_minor"], 1234);
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "refunded");
    assert_eq!(payment["refund_id"], "re_test");
}

#[tokio::test]
async fn a_void_before_its_session_leaves_a_tombstone_and_no_session_is_opened() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();

    h.bus.send(&VoidPayment { order_id: order }).await;
    h.bus.until("payments.voided").await;
    h.bus.send(&create_session(order, "stripe")).await;

    let seen = h.bus.until("payments.session-failed").await;
    assert!(seen.iter().all(|m| m.kind != "payments.session-created"));
    assert!(
        h.calls().iter().all(|c| !c.starts_with("sessions")),
        "{:?}",
        h.calls()
    );
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "voided");
}

#[tokio::test]
async fn a_repeated_command_has_one_effect() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    let create = create_session(order, "stripe");

    h.bus.send(&create).await;
    h.bus.send(&create).await;
    // The consumer applies deliveries concurrently: the voids go once the session exists, as
    // the saga sends them (a void that overtakes its create is another test's tombstone).
    h.bus.until("payments.session-created").await;
    h.bus.send(&VoidPayment { order_id: order }).await;
    h.bus.send(&VoidPayment { order_id: order }).await;

    h.bus.until("payments.voided").await;
    let more = h.bus.drain(QUIET).await;
    assert!(more.is_empty(), "{more:?}");
    let calls = h.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("sessions")).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("expire")).count(),
        1,
        "{calls:?}"
    );
}

#[tokio::test]
async fn a_psp_blip_is_retried_with_the_same_idempotency_key() {
    let h = Harness::start().await;
    h.psp.lock().unwrap().unavailable = 2;
    let order = Uuid::now_v7();

    h.open_session(order, "stripe", 1234).await;

    assert_eq!(h.calls(), [format!("sessions lab-{order}-create-session")]);
}

#[tokio::test]
async fn a_session_at_an_unknown_provider_fails() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();

    h.bus.send(&create_session(order, "cash")).await;

    let seen = h.bus.until("payments.session-failed").await;
    assert!(
        seen.last().unwrap().payload["reason"]
            .as_str()
            .unwrap()
            .contains("cash")
    );
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "failed");
}

/// A PayPal webhook body about order `order_id`.
fn paypal_event(event_id: &str, kind: &str, order_id: Uuid, resource_id: &str) -> String {
    serde_json::json!({
        "id": event_id,
        "event_type": kind,
        "create_time": chrono::Utc::now().to_rfc3339(),
        "resource": {
            "id": resource_id,
            "custom_id": order_id.to_string(),
            "amount": {"currency_code": "EUR", "value": "12.34"},
        },
    })
    .to_string()
}

#[tokio::test]
async fn a_paypal_payment_goes_from_session_to_refund_with_exact_decimal_amounts() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();

    let created = h.open_session(order, "paypal", 1234).await;
    assert_eq!(created["session_id"], format!("PAYID-{order}"));
    let body = paypal_event("WH-A", "PAYMENT.AUTHORIZATION.CREATED", order, "AUTH-9");
    let (status, _) = h.paypal(&body, &h.cert_url(), false).await;
    assert_eq!(status, 200);
    h.bus.until("payments.authorized").await;
    capture(&h, order).await;
    h.bus.until("payments.captured").await;
    refund(&h, order, "requires review").await;

    let seen = h.bus.until("payments.refunded").await;
    assert_eq!(seen.last().unwrap().payload["amount"]["amount_minor"], 1234);
    let calls = h.calls();
    assert!(
        calls.contains(&format!("orders lab-{order}-create-session \"12.34\"")),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("capture AUTH-9 lab-{order}-capture")),
        "{calls:?}"
    );
    assert!(
        calls.contains(&format!("refund CAPTURE-1 lab-{order}-refund")),
        "{calls:?}"
    );
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "refunded");
    assert_eq!(payment["authorization_id"], "AUTH-9");
    assert_eq!(payment["capture_id"], "CAPTURE-1");
    assert_eq!(payment["refund_id"], "REFUND-1");
}

#[tokio::test]
async fn a_paypal_capture_completed_webhook_after_the_capture_command_changes_nothing() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "paypal", 1234).await;
    let body = paypal_event("WH-B", "PAYMENT.AUTHORIZATION.CREATED", order, "AUTH-9");
    h.paypal(&body, &h.cert_url(), false).await;
    h.bus.until("payments.authorized").await;
    capture(&h, order).await;
    h.bus.until("payments.captured").await;

    let late = paypal_event("WH-C", "PAYMENT.CAPTURE.COMPLETED", order, "CAPTURE-1");
    let (status, answer) = h.paypal(&late, &h.cert_url(), false).await;

    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")));
    assert!(h.bus.drain(QUIET).await.is_empty());
}
