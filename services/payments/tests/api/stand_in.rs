//! A stand-in for the PSP inside the test: the Stripe and PayPal calls the adapters make,
//! answered from the request (deterministic ids), every call logged with its idempotency key,
//! and the PayPal signing certificates served as the real PSP serves them.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// What the in-test PSP was asked, and how it should answer.
#[derive(Default)]
pub struct PspLog {
    /// `"<path> <idempotency key>"` of every call, in order.
    pub calls: Vec<String>,
    /// Certificate downloads.
    pub cert_fetches: usize,
    /// Refuse captures (as a PSP told to fail them).
    pub fail_capture: bool,
    /// Answer 503 to the next N calls (a blip the adapter retries through).
    pub unavailable: usize,
}

#[derive(Clone)]
struct Psp {
    log: Arc<Mutex<PspLog>>,
    base: String,
    leaf_pem: Arc<String>,
    rogue_pem: Arc<String>,
}

impl Psp {
    fn note(&self, what: String) -> Result<(), axum::http::StatusCode> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if log.unavailable > 0 {
            log.unavailable -= 1;
            return Err(axum::http::StatusCode::SERVICE_UNAVAILABLE);
        }
        log.calls.push(what);
        Ok(())
    }
}

type Answer = Result<axum::Json<Value>, (axum::http::StatusCode, axum::Json<Value>)>;

fn blip(status: axum::http::StatusCode) -> (axum::http::StatusCode, axum::Json<Value>) {
    (status, axum::Json(json!({"error": {"type": "api_error"}})))
}

fn key(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("idempotency-key")
        .or_else(|| headers.get("paypal-request-id"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn create_session(
    State(psp): State<Psp>,
    headers: axum::http::HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Answer {
    psp.note(format!("sessions {}", key(&headers)))
        .map_err(blip)?;
    let order = form.get("metadata[order_id]").cloned().unwrap_or_default();
    Ok(axum::Json(json!({
        "id": format!("cs_test_{order}"),
        "object": "checkout.session",
        "url": format!("{}/pay/cs_test_{order}", psp.base),
        "payment_intent": format!("pi_{order}"),
        "status": "open",
    })))
}

async fn capture(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    Form(form): Form<std::collections::HashMap<String, String>>,
) -> Answer {
    psp.note(format!("capture {}", key(&headers)))
        .map_err(blip)?;
    if psp
        .log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .fail_capture
    {
        return Err((
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": {"type": "invalid_request_error",
                "code": "payment_intent_unexpected_state", "message": "capture refused"}})),
        ));
    }
    let amount: i64 = form
        .get("amount_to_capture")
        .and_then(|a| a.parse().ok())
        .unwrap_or(0);
    Ok(axum::Json(
        json!({"id": id, "object": "payment_intent", "status": "succeeded",
        "amount_received": amount, "currency": "eur"}),
    ))
}

async fn cancel(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("cancel {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": id, "object": "payment_intent", "status": "canceled"}),
    ))
}

async fn expire(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("expire {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": id, "object": "checkout.session", "status": "expired"}),
    ))
}

async fn refund(State(psp): State<Psp>, headers: axum::http::HeaderMap) -> Answer {
    psp.note(format!("refund {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": "re_test", "object": "refund", "amount": 1234, "currency": "eur"}),
    ))
}

async fn paypal_token(State(psp): State<Psp>) -> Answer {
    psp.note("token".into()).map_err(blip)?;
    Ok(axum::Json(
        json!({"access_token": "A21-test", "token_type": "Bearer", "expires_in": 32400}),
    ))
}

async fn paypal_order(
    State(psp): State<Psp>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Answer {
    psp.note(format!(
        "orders {} {}",
        key(&headers),
        body["purchase_units"][0]["amount"]["value"]
    ))
    .map_err(blip)?;
    let order = body["purchase_units"][0]["custom_id"]
        .as_str()
        .unwrap_or_default();
    Ok(axum::Json(json!({
        "id": format!("PAYID-{order}"),
        "status": "CREATED",
        "links": [
            {"rel": "self", "href": format!("{}/paypal/v2/checkout/orders/PAYID-{order}", psp.base)},
            {"rel": "approve", "href": format!("{}/pay/PAYID-{order}", psp.base)},
        ],
    })))
}

async fn paypal_capture(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Answer {
    psp.note(format!("capture {id} {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(
        json!({"id": "CAPTURE-1", "status": "COMPLETED", "amount": body["amount"]}),
    ))
}

async fn paypal_void(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("void {id} {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(json!({"id": id, "status": "VOIDED"})))
}

async fn paypal_refund(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Answer {
    psp.note(format!("refund {id} {}", key(&headers)))
        .map_err(blip)?;
    Ok(axum::Json(json!({"id": "REFUND-1", "status": "COMPLETED",
        "amount": {"currency_code": "EUR", "value": "12.34"}})))
}

async fn leaf_cert(State(psp): State<Psp>) -> String {
    psp.log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .cert_fetches += 1;
    (*psp.leaf_pem).clone()
}

async fn rogue_cert(State(psp): State<Psp>) -> String {
    psp.log
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .cert_fetches += 1;
    (*psp.rogue_pem).clone()
}

/// The stand-in's routes; `base` is its own URL (for hosted-page links).
pub fn router(
    log: Arc<Mutex<PspLog>>,
    base: String,
    leaf_pem: String,
    rogue_pem: String,
) -> Router {
    let psp = Psp {
        log,
        base,
        leaf_pem: Arc::new(leaf_pem),
        rogue_pem: Arc::new(rogue_pem),
    };
    Router::new()
        .route("/stripe/v1/checkout/sessions", post(create_session))
        .route("/stripe/v1/checkout/sessions/{id}/expire", post(expire))
        .route("/stripe/v1/payment_intents/{id}/capture", post(capture))
        .route("/stripe/v1/payment_intents/{id}/cancel", post(cancel))
        .route("/stripe/v1/refunds", post(refund))
        .route("/paypal/v1/oauth2/token", post(paypal_token))
        .route("/paypal/v2/checkout/orders", post(paypal_order))
        .route(
            "/paypal/v2/payments/authorizations/{id}/capture",
            post(paypal_capture),
        )
        .route(
            "/paypal/v2/payments/authorizations/{id}/void",
            post(paypal_void),
        )
        .route(
            "/paypal/v2/payments/captures/{id}/refund",
            post(paypal_refund),
        )
        .route("/certs/leaf.pem", get(leaf_cert))
        .route("/certs/rogue.pem", get(rogue_cert))
        .with_state(psp)
}
