//! `GET /invariants`: one capture per payment holds on a captured payment; a second capture in
//! our history, or a second one the provider reports (even if ignored), is reported by order id;
//! refunded orders are listed for the BFF's cross-check.

use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Harness, STRIPE_OLD, now, stripe_event, stripe_signature};

async fn pool(h: &Harness) -> PgPool {
    lab_db::connect(
        &h.app.env.database("payments"),
        "payments",
        "invariants-test",
        "-",
    )
    .await
    .unwrap()
}

async fn invariants(h: &Harness) -> Value {
    let (status, body) = h.app.get_json("/invariants").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A Stripe payment of 1234 for a new order, captured through its webhook: the order's id.
async fn captured(h: &Harness) -> Uuid {
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;
    let body = stripe_event("evt_cap", "payment_intent.succeeded", order, 1234);
    let (status, answer) = h
        .stripe(&body, Some(stripe_signature(now(), &body, &[STRIPE_OLD])))
        .await;
    assert_eq!(
        (status, &answer["outcome"]),
        (200, &json!("applied")),
        "{answer}"
    );
    order
}

#[tokio::test]
async fn a_payment_captured_once_holds_every_invariant() {
    let h = Harness::start().await;
    captured(&h).await;

    let body = invariants(&h).await;

    assert_eq!(body["held"], true, "{body}");
    assert_eq!(body["no_double_capture"]["captured"], 1, "{body}");
    assert_eq!(body["no_double_capture"]["violations"], 0, "{body}");
    assert_eq!(body["captured_within_authorized"]["held"], true, "{body}");
    let (_, doc) = h.app.get_json("/openapi.json").await;
    assert!(doc["paths"]["/invariants"]["get"].is_object(), "{doc}");
    assert_eq!(
        body["refunded"],
        json!({"count": 0, "order_ids": []}),
        "{body}"
    );
}

#[tokio::test]
async fn a_second_capture_in_the_history_is_reported_with_the_order() {
    let h = Harness::start().await;
    let order = captured(&h).await;

    sqlx::query(
        "INSERT INTO payment_events (order_id, source, kind, outcome) \
         VALUES ($1, 'command', 'CapturePayment', 'applied')",
    )
    .bind(order)
    .execute(&pool(&h).await)
    .await
    .unwrap();
    let body = invariants(&h).await;

    assert_eq!(body["held"], false, "{body}");
    let twice = &body["no_double_capture"];
    assert_eq!(twice["held"], false, "{body}");
    assert_eq!(twice["order_ids"], json!([order.to_string()]), "{body}");
}

#[tokio::test]
async fn a_second_intent_captured_at_the_provider_is_reported_even_though_ignored() {
    let h = Harness::start().await;
    let order = captured(&h).await;
    let other_intent = stripe_event("evt_cap_2", "payment_intent.succeeded", order, 1234)
        .replace(&format!("pi_{order}"), "pi_second");

    let (_, answer) = h
        .stripe(
            &other_intent,
            Some(stripe_signature(now(), &other_intent, &[STRIPE_OLD])),
        )
        .await;
    let body = invariants(&h).await;

    assert_eq!(answer["outcome"], "ignored", "{answer}");
    assert_eq!(body["no_double_capture"]["held"], false, "{body}");
    assert_eq!(
        body["no_double_capture"]["order_ids"],
        json!([order.to_string()]),
        "{body}"
    );
}

#[tokio::test]
async fn refunded_orders_are_listed_and_over_capture_is_reported() {
    let h = Harness::start().await;
    let refunded = captured(&h).await;
    let pool = pool(&h).await;

    sqlx::query(
        "UPDATE payments SET state = 'refunded', refunded_minor = 1234 WHERE order_id = $1",
    )
    .bind(refunded)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE payments SET captured_minor = 99999 WHERE order_id = $1")
        .bind(refunded)
        .execute(&pool)
        .await
        .unwrap();
    let body = invariants(&h).await;

    assert_eq!(
        body["refunded"],
        json!({"count": 1, "order_ids": [refunded.to_string()]}),
        "{body}"
    );
    assert_eq!(body["captured_within_authorized"]["held"], false, "{body}");
    assert_eq!(
        body["captured_within_authorized"]["order_ids"],
        json!([refunded.to_string()]),
        "{body}"
    );
}
