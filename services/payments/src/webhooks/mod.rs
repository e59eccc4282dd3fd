//! Webhook ingress: `POST /webhooks/stripe` and `POST /webhooks/paypal`.
//!
//! A delivery is verified before anything is recorded (an unverified one is a 400 and leaves no
//! trace but a log line and a metric). A verified one is then, in one transaction: claimed in
//! `payment_events` by `(provider, event id)` (a duplicate finds the row, answers 200 and changes
//! nothing), applied to the payment through the state machine, and its saga event enqueued —
//! the payment, the event's outcome and the emission in one statement ([`store::finish`]).
//! Types payments does not act on are recorded as ignored and answered 200, so the provider
//! stops retrying them.

pub mod paypal;
pub mod stripe;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use lab_http::{Json, Problem};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::routes::{AppState, store_problem};
use crate::state::PaymentState;
use crate::store::{self, Fresh, Locked, Writes};
use crate::transitions::{self, Observed};

/// What a webhook event means for the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Funds held (Stripe `amount_capturable_updated`, PayPal `AUTHORIZATION.CREATED`).
    Authorized,
    /// The buyer's payment failed or approval was reversed.
    Declined,
    /// The session ran out unpaid.
    Expired,
    /// Funds taken.
    Captured,
    /// The provider refused a capture (not a state: the payment stays authorized).
    CaptureFailed,
    /// The intent or authorization was cancelled.
    Voided,
    /// Funds given back.
    Refunded,
}

/// A verified event, read.
#[derive(Debug, Clone)]
pub struct Event {
    /// The provider's event id: the dedupe key.
    pub event_id: String,
    /// The provider's event type.
    pub kind: String,
    /// The order it concerns (`metadata.order_id` / `custom_id`).
    pub order_id: Option<Uuid>,
    /// What it means; `None` for types payments does not act on.
    pub target: Option<Target>,
    /// Amounts and ids it carries.
    pub observed: Observed,
}

/// The answer to an accepted webhook.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// `applied`, `ignored`, `duplicate`, `no_order`, `ignored_type`.
    pub outcome: String,
}

/// The signature did not verify: nothing was recorded.
fn refused(state: &AppState, provider: &str, reason: String) -> Problem {
    state.metrics.webhooks_refused.inc();
    tracing::warn!(provider, %reason, "webhook refused");
    Problem::typed(
        StatusCode::BAD_REQUEST,
        "webhook-signature",
        "The webhook could not be verified",
    )
    .detail(reason)
}

fn body_json(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|e| {
        Problem::typed(StatusCode::BAD_REQUEST, "malformed-json", "Malformed JSON")
            .detail(format!("the body is not JSON: {e}"))
    })
}

fn unreadable(reason: String) -> Problem {
    Problem::typed(
        StatusCode::UNPROCESSABLE_ENTITY,
        "webhook-event",
        "The event cannot be read",
    )
    .detail(reason)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A Stripe event, signed with `Stripe-Signature`.
#[utoipa::path(post, path = "/webhooks/stripe", tag = "webhooks",
    request_body(content = Object, description = "A Stripe event"),
    params(("Stripe-Signature" = String, Header, description = "t=…,v1=…[,v1=…]")),
    responses((status = 200, body = Accepted), (status = 400, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Accepted>, Problem> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    stripe::verify(
        signature,
        &body,
        &state.stripe_secrets,
        now(),
        state.stripe_tolerance_s,
    )
    .map_err(|e| refused(&state, "stripe", e.to_string()))?;
    let value = body_json(&body)?;
    let event = stripe::parse(&value).map_err(unreadable)?;
    ingest(&state, "stripe", event, &value).await
}

/// A PayPal event, signed with the `PAYPAL-TRANSMISSION-*` headers.
#[utoipa::path(post, path = "/webhooks/paypal", tag = "webhooks",
    request_body(content = Object, description = "A PayPal event"),
    responses((status = 200, body = Accepted), (status = 400, body = Problem),
        (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn paypal_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Accepted>, Problem> {
    state
        .paypal
        .verify(&headers, &body, now())
        .await
        .map_err(|e| refused(&state, "paypal", e.to_string()))?;
    let value = body_json(&body)?;
    let event = paypal::parse_event(&value).map_err(unreadable)?;
    ingest(&state, "paypal", event, &value).await
}

/// Opens a webhook's transaction and bounds how long it waits for a payment row a command
/// holds (the command may be calling the provider): past 5 s the webhook answers 503 and the
/// provider delivers it again later. One round trip for both.
const BEGIN: &str = "BEGIN; SET LOCAL lock_timeout = '5s'";

/// The row a webhook writes for an order with no payment, to wait on a `CreatePaymentSession`
/// still inserting one (see [`store::lock_or_insert`]); never committed.
const PROBE: Fresh<'static> = Fresh {
    provider: None,
    state: PaymentState::Voided,
    amount_minor: None,
    currency: None,
    reason: Some("webhook probe"),
};

/// Claims, applies and records a verified event in one transaction.
async fn ingest(
    state: &AppState,
    source: &str,
    mut event: Event,
    raw: &Value,
) -> Result<Json<Accepted>, Problem> {
    let fail = |e: store::StoreError| store_problem(e);
    let mut tx = lab_db::begin_with(&state.pool, BEGIN)
        .await
        .map_err(|e| fail(e.into()))?;
    if event.order_id.is_none()
        && let Some(intent) = &event.observed.intent_id
    {
        event.order_id = store::order_of_intent(&mut tx, intent)
            .await
            .map_err(fail)?;
    }
    let Some(row) = store::claim_event(
        &mut tx,
        source,
        &event.event_id,
        &event.kind,
        event.order_id,
        raw,
    )
    .await
    .map_err(fail)?
    else {
        state.metrics.webhooks_duplicate.inc();
        return Ok(Json(Accepted {
            outcome: "duplicate".into(),
        }));
    };
    let outcome = match (event.target, event.order_id) {
        (None, _) => "ignored_type",
        (Some(_), None) => "no_order",
        (Some(target), Some(order_id)) => {
            let Locked {
                mut payment,
                inserted,
            } = store::lock_or_insert(&mut tx, order_id, &PROBE)
                .await
                .map_err(fail)?;
            if inserted {
                // No payment, and none being opened: the session may be another instance's
                // still (or a foreign one). Roll back the probe, record nothing and let the
                // provider retry.
                drop(tx);
                tracing::info!(source, event_id = %event.event_id, %order_id,
                    "webhook for a payment not known yet; asking for a retry");
                return Err(Problem::typed(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "payment-not-yet-known",
                    "The payment is not known yet",
                )
                .detail(format!(
                    "no payment for order {order_id} yet; deliver again later"
                ))
                .header(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                ));
            }
            match target {
                Target::CaptureFailed => {
                    let reason = event
                        .observed
                        .reason
                        .clone()
                        .unwrap_or_else(|| "capture denied".into());
                    match transitions::capture_failed(&mut payment, reason, None).map_err(fail)? {
                        None => "ignored",
                        Some(failed) => {
                            // Applied only if the saga had not heard it yet: the outcome
                            // depends on the emission, so it is written after.
                            let writes = Writes {
                                save: Some(&payment),
                                events: vec![failed],
                                ..Writes::default()
                            };
                            let emitted = store::finish(&mut tx, order_id, writes)
                                .await
                                .map_err(fail)?;
                            if emitted == 1 { "applied" } else { "ignored" }
                        }
                    }
                }
                other => {
                    let (outcome, events) = transitions::advance(
                        &mut payment,
                        state_of(other),
                        &event.observed,
                        None,
                        &state.metrics,
                    )
                    .map_err(fail)?;
                    let outcome = outcome.as_str();
                    let writes = Writes {
                        save: Some(&payment),
                        events,
                        command: None,
                        webhook: Some((row, outcome)),
                    };
                    store::finish(&mut tx, order_id, writes)
                        .await
                        .map_err(fail)?;
                    return commit(tx, source, &event, outcome).await;
                }
            }
        }
    };
    store::set_outcome(&mut tx, row, outcome)
        .await
        .map_err(fail)?;
    commit(tx, source, &event, outcome).await
}

async fn commit(
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    source: &str,
    event: &Event,
    outcome: &str,
) -> Result<Json<Accepted>, Problem> {
    tx.commit()
        .await
        .map_err(|e| store_problem(store::StoreError::from(e)))?;
    tracing::info!(source, event_id = %event.event_id, kind = %event.kind,
        order_id = ?event.order_id, %outcome, "webhook recorded");
    Ok(Json(Accepted {
        outcome: outcome.to_owned(),
    }))
}

fn state_of(target: Target) -> PaymentState {
    match target {
        Target::Authorized => PaymentState::Authorized,
        Target::Declined => PaymentState::Declined,
        Target::Expired => PaymentState::Expired,
        Target::Captured => PaymentState::Captured,
        Target::Voided => PaymentState::Voided,
        Target::Refunded => PaymentState::Refunded,
        // Handled before; a capture failure is not a state.
        Target::CaptureFailed => PaymentState::Authorized,
    }
}
