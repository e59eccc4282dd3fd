//! Stripe webhooks: the signature is checked (every secret, every `v1`, constant time, 300 s)
//! before anything is recorded; verified events are deduplicated and move the payment forward
//! only, each saga event at most once.

use std::time::Duration;

use uuid::Uuid;

use crate::helpers::{Harness, STRIPE_NEW, STRIPE_OLD, now, stripe_event, stripe_signature};

const QUIET: Duration = Duration::from_millis(1_500);

#[tokio::test]
async fn a_valid_authorization_webhook_authorizes_the_payment_and_emits_payment_authorized() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event(
        "evt_auth_1",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );

    let (status, answer) = h
        .stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "applied");
    let seen = h.bus.until("payments.authorized").await;
    let authorized = seen.last().unwrap();
    assert_eq!(authorized.payload["amount"]["amount_minor"], 1234);
    assert_eq!(authorized.payload["amount"]["currency"], "EUR");
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "authorized");
    assert_eq!(payment["intent_id"], format!("pi_{order}"));
}

#[tokio::test]
async fn a_tampered_body_is_refused_with_400_and_nothing_is_recorded() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event(
        "evt_tamper",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );
    let signature = stripe_signature(now(), &body, &[STRIPE_OLD]);
    let tampered = body.replace("1234", "1");

    let (status, problem) = h.stripe(&tampered, Some(signature)).await;

    assert_eq!(status, 400);
    assert_eq!(problem["type"], "urn:lab:problem:webhook-signature");
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "session_created");
    assert!(
        payment["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"] == "command"),
        "{payment}"
    );
}

#[tokio::test]
async fn a_signature_made_with_another_secret_is_refused() {
    let h = Harness::start().await;
    let body = stripe_event("evt_wrong", "payment_intent.succeeded", Uuid::now_v7(), 5);

    let (status, problem) = h
        .stripe(
            &body,
            Some(stripe_signature(now(), &body, &["whsec_not_ours"])),
        )
        .await;

    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("no v1"),
        "{problem}"
    );
}

#[tokio::test]
async fn a_timestamp_older_than_300_seconds_is_refused() {
    let h = Harness::start().await;
    let body = stripe_event("evt_stale", "payment_intent.succeeded", Uuid::now_v7(), 5);

    let (status, problem) = h
        .stripe(
            &body,
            Some(stripe_signature(now() - 301, &body, &[STRIPE_OLD])),
        )
        .await;

    assert_eq!(status, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("tolerance"),
        "{problem}"
    );
}

#[tokio::test]
async fn during_a_rotation_a_second_v1_signed_with_the_new_secret_is_accepted() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event(
        "evt_rotate",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );

    // The first v1 is from a secret we no longer hold; the second from the new one.
    let signature = stripe_signature(now(), &body, &["whsec_retired", STRIPE_NEW]);
    let (status, answer) = h.stripe(&body, Some(signature)).await;

    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "applied");
}

#[tokio::test]
async fn a_duplicate_event_is_recorded_once_and_emits_one_event() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event(
        "evt_dup",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );

    let first = h
        .stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;
    let second = h
        .stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_NEW])))
        .await;

    assert_eq!((first.0, second.0), (200, 200));
    assert_eq!(second.1["outcome"], "duplicate");
    let emitted = h.bus.drain(QUIET).await;
    let authorized = emitted
        .iter()
        .filter(|m| m.kind == "payments.authorized")
        .count();
    assert_eq!(authorized, 1);
    let (_, payment) = h.payment(order).await;
    let webhooks = payment["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event_id"] == "evt_dup")
        .count();
    assert_eq!(webhooks, 1);
}

#[tokio::test]
async fn a_capture_seen_before_its_authorization_ends_captured_with_each_event_once() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let captured = stripe_event("evt_cap", "payment_intent.succeeded", order, 1234);
    let authorized = stripe_event(
        "evt_auth",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );

    let first = h
        .stripe(
            &captured,
            Some(stripe_signature(now(), &captured, &[STRIPE_OLD])),
        )
        .await;
    let late = h
        .stripe(
            &authorized,
            Some(stripe_signature(now(), &authorized, &[STRIPE_OLD])),
        )
        .await;

    assert_eq!(first.1["outcome"], "applied");
    assert_eq!(late.1["outcome"], "ignored");
    let kinds: Vec<String> = h
        .bus
        .drain(QUIET)
        .await
        .into_iter()
        .map(|m| m.kind)
        .collect();
    assert_eq!(kinds, ["payments.authorized", "payments.captured"]);
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "captured");
}

#[tokio::test]
async fn an_authorization_for_another_amount_is_still_reported_with_the_actual_amount() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event(
        "evt_more",
        "payment_intent.amount_capturable_updated",
        order,
        1300,
    );

    h.stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;

    let seen = h.bus.until("payments.authorized").await;
    assert_eq!(seen.last().unwrap().payload["amount"]["amount_minor"], 1300);
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["amount_mismatch"], true);
    let metrics = h.app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("payments_amount_mismatch_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unknown_event_type_that_verifies_is_recorded_as_ignored() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event("evt_other", "customer.created", order, 0);

    let (status, answer) = h
        .stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;

    assert_eq!(status, 200);
    assert_eq!(answer["outcome"], "ignored_type");
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "session_created");
}

#[tokio::test]
async fn a_missing_signature_or_a_body_that_is_not_json_is_a_400_problem() {
    let h = Harness::start().await;

    let (missing, problem) = h.stripe("{}", None).await;
    let body = "not json";
    let (malformed, malformed_problem) = h
        .stripe(body, Some(stripe_signature(now(), body, &[STRIPE_OLD])))
        .await;

    assert_eq!(missing, 400);
    assert!(
        problem["detail"].as_str().unwrap().contains("missing"),
        "{problem}"
    );
    assert_eq!(malformed, 400);
    assert_eq!(malformed_problem["type"], "urn:lab:problem:malformed-json");
}

#[tokio::test]
async fn a_refund_event_naming_only_its_intent_finds_the_payment() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let captured = stripe_event("evt_c", "payment_intent.succeeded", order, 1234);
    h.stripe(
        &captured,
        Some(stripe_signature(now(), &captured, &[STRIPE_OLD])),
    )
    .await;
    let refund = serde_json::json!({
        "id": "evt_r", "object": "event", "type": "charge.refunded", "created": now(),
        "data": {"object": {"id": "re_1", "object": "refund", "amount": 1234,
            "currency": "eur", "payment_intent": format!("pi_{order}")}},
    })
    .to_string();

    let (status, answer) = h
        .stripe(
            &refund,
            Some(stripe_signature(now(), &refund, &[STRIPE_OLD])),
        )
        .await;

    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")));
    let (_, payment) = h.payment(order).await;
    assert_eq!(payment["state"], "refunded");
    assert_eq!(payment["refund_id"], "re_1");
}

#[tokio::test]
async fn a_webhook_for_a_payment_not_known_yet_asks_for_a_retry_and_records_nothing() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    let body = stripe_event(
        "evt_early",
        "payment_intent.amount_capturable_updated",
        order,
        1234,
    );
    let sign = |body: &str| Some(stripe_signature(now(), body, &[STRIPE_OLD]));

    let (early, problem) = h.stripe(&body, sign(&body)).await;
    h.open_session(order, "stripe", 1234).await;
    let (retried, answer) = h.stripe(&body, sign(&body)).await;

    assert_eq!(early, 503);
    assert_eq!(problem["type"], "urn:lab:problem:payment-not-yet-known");
    assert_eq!(
        (retried, answer["outcome"].as_str()),
        (200, Some("applied"))
    );
}
