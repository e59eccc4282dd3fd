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
    h.bus
        .send(&CapturePayment {
            order_id: order,
            amount: eur(1234),
        })
        .await;

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

    h.bus
        .send(&CapturePayment {
            order_id: order,
            amount: eur(1234),
        })
        .await;

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

    h.bus
        .send(&RefundPayment {
            order_id: order,
            reason: "out of stock".into(),
        })
        .await;

    h.bus.until("payments.voided").await;
    assert!(h.calls().contains(&format!("cancel lab-{order}-cancel")));
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "voided");
}

#[tokio::test]
async fn refunding_a_captured_payment_refunds_it_and_records_the_refund_id() {
    let h = Harness::start().await;
    let order = authorized(&h).await;
    h.bus
        .send(&CapturePayment {
            order_id: order,
            amount: eur(1234),
        })
        .await;
    h.bus.until("payments.captured").await;

    h.bus
        .send(&RefundPayment {
            order_id: order,
            reason: "requires review".into(),
        })
        .await;

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
    h.bus
        .send(&CreatePaymentSession {
            order_id: order,
            amount: eur(1234),
            provider: "stripe".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        })
        .await;

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
    let create = CreatePaymentSession {
        order_id: order,
        amount: eur(1234),
        provider: "stripe".into(),
        expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
    };

    h.bus.send(&create).await;
    h.bus.send(&create).await;
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

    h.bus
        .send(&CreatePaymentSession {
            order_id: order,
            amount: eur(1234),
            provider: "cash".into(),
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        })
        .await;

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
