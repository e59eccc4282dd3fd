//! The Stripe-like API under `/stripe`: checkout sessions with a manually captured payment
//! intent, capture, cancel, refunds, and the buyer's approval or decline.
//!
//! Bodies are form-encoded with Stripe's bracket syntax; errors are Stripe's
//! `{"error":{"type","code","message"}}`; every POST honours `Idempotency-Key`. The objects live
//! in `books.rs`, their transitions in `ops.rs`; this file is the HTTP edge.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use base64::Engine as _;
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

mod books;
mod ops;

use crate::sandbox::{Outbox, Psp, Replay};
pub use books::Books;
use books::Ctx;
pub use ops::{approve, decline, expire_due};

/// A Stripe error, shaped and coded as Stripe answers it.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Invalid API Key provided.")]
    Unauthorized,
    #[error("Missing required param: {0}.")]
    Missing(&'static str),
    #[error("Invalid {param}: {reason}")]
    Invalid { param: String, reason: String },
    #[error("No such {kind}: '{id}'")]
    NotFound { kind: &'static str, id: String },
    #[error("{message}")]
    State { code: &'static str, message: String },
    #[error(
        "Keys for idempotent requests can only be used with the same parameters they were first used with."
    )]
    Idempotency,
    #[error("Your card was declined.")]
    Declined,
}

impl StripeError {
    pub fn invalid(param: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            param: param.to_owned(),
            reason: reason.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StripeError::*;
        match self {
            Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "api_key_invalid",
            ),
            Missing(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_missing",
            ),
            Invalid { .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_invalid",
            ),
            NotFound { .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "resource_missing",
            ),
            State { code, .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", code),
            Idempotency => (
                StatusCode::BAD_REQUEST,
                "idempotency_error",
                "idempotency_error",
            ),
            Declined => (StatusCode::PAYMENT_REQUIRED, "card_error", "card_declined"),
        }
    }
}

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        let (status, kind, code) = self.parts();
        let mut error = json!({"type": kind, "code": code, "message": self.to_string()});
        match &self {
            Self::Missing(param) => error["param"] = json!(param),
            Self::Invalid { param, .. } => error["param"] = json!(param),
            _ => {}
        }
        (status, axum::Json(json!({ "error": error }))).into_response()
    }
}

/// Form parameters, bracket keys kept as written (`metadata[order_id]`).
pub struct Params(pub BTreeMap<String, String>);

impl Params {
    fn parse(body: &[u8]) -> Result<Self, StripeError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| StripeError::invalid("body", format!("not form-encoded: {e}")))?;
        Ok(Self(pairs.into_iter().collect()))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A non-negative integer parameter.
    pub fn integer(&self, name: &'static str) -> Result<Option<i64>, StripeError> {
        self.get(name)
            .map(|raw| {
                raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
                    StripeError::invalid(name, format!("{raw:?} is not a non-negative integer"))
                })
            })
            .transpose()
    }

    /// `metadata[k]=v` as `{k: v}`.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
                Some((key.to_owned(), v.clone()))
            })
            .collect()
    }
}

pub fn router() -> axum::Router<Psp> {
    axum::Router::new()
        .route(
            "/stripe/v1/checkout/sessions",
            post(create_checkout_session),
        )
        .route(
            "/stripe/v1/checkout/sessions/{id}",
            get(get_checkout_session),
        )
        .route(
            "/stripe/v1/checkout/sessions/{id}/expire",
            post(expire_checkout_session),
        )
        .route("/stripe/v1/payment_intents/{id}", get(get_payment_intent))
        .route(
            "/stripe/v1/payment_intents/{id}/capture",
            post(capture_payment_intent),
        )
        .route(
            "/stripe/v1/payment_intents/{id}/cancel",
            post(cancel_payment_intent),
        )
        .route("/stripe/v1/refunds", post(create_refund))
        .route("/stripe/{*rest}", any(unknown_url))
}

type Id = Result<Path<String>, PathRejection>;

/// Creates a checkout session and its payment intent (manual capture).
#[utoipa::path(post, path = "/stripe/v1/checkout/sessions", tag = "stripe",
    request_body(content_type = "application/x-www-form-urlencoded", description = "amount, currency, metadata[order_id], expires_at, success_url"),
    responses((status = 200, description = "the session"), (status = 400, description = "invalid_request_error"), (status = 401, description = "bad secret key")))]
pub async fn create_checkout_session(
    State(psp): State<Psp>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    call(
        &psp,
        &headers,
        "/v1/checkout/sessions",
        &body,
        ops::create_session,
    )
}

/// The session.
#[utoipa::path(get, path = "/stripe/v1/checkout/sessions/{id}", tag = "stripe",
    responses((status = 200, description = "the session"), (status = 404, description = "resource_missing")))]
pub async fn get_checkout_session(State(psp): State<Psp>, headers: HeaderMap, id: Id) -> Response {
    read(&psp, &headers, id, |b, id| b.session_json(id))
}

/// `open` → `expired`.
#[utoipa::path(post, path = "/stripe/v1/checkout/sessions/{id}/expire", tag = "stripe",
    responses((status = 200, description = "the session"), (status = 400, description = "not open"), (status = 404, description = "resource_missing")))]
pub async fn expire_checkout_session(
    State(psp): State<Psp>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    with_id(&psp, &headers, id, "expire", &body, ops::expire_session)
}

/// The payment intent.
#[utoipa::path(get, path = "/stripe/v1/payment_intents/{id}", tag = "stripe",
    responses((status = 200, description = "the intent"), (status = 404, description = "resource_missing")))]
pub async fn get_payment_intent(State(psp): State<Psp>, headers: HeaderMap, id: Id) -> Response {
    read(&psp, &headers, id, |b, id| b.intent_json(id))
}

/// `requires_capture` → `succeeded`.
#[utoipa::path(post, path = "/stripe/v1/payment_intents/{id}/capture", tag = "stripe",
    responses((status = 200, description = "the intent"), (status = 400, description = "payment_intent_unexpected_state"),
              (status = 402, description = "card_declined (scenario fail_capture)"), (status = 404, description = "resource_missing")))]
pub async fn capture_payment_intent(
    State(psp): State<Psp>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    with_id(&psp, &headers, id, "capture", &body, ops::capture)
}

/// `requires_payment_method`/`requires_capture` → `canceled`.
#[utoipa::path(post, path = "/stripe/v1/payment_intents/{id}/cancel", tag = "stripe",
    responses((status = 200, description = "the intent"), (status = 400, description = "payment_intent_unexpected_state"), (status = 404, description = "resource_missing")))]
pub async fn cancel_payment_intent(
    State(psp): State<Psp>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    with_id(&psp, &headers, id, "cancel", &body, ops::cancel)
}

/// Refunds a succeeded intent, all of it or `amount`.
#[utoipa::path(post, path = "/stripe/v1/refunds", tag = "stripe",
    request_body(content_type = "application/x-www-form-urlencoded", description = "payment_intent, amount"),
    responses((status = 200, description = "the refund"), (status = 400, description = "invalid_request_error"), (status = 404, description = "resource_missing")))]
pub async fn create_refund(State(psp): State<Psp>, headers: HeaderMap, body: Bytes) -> Response {
    call(&psp, &headers, "/v1/refunds", &body, ops::refund)
}

/// Stripe takes the secret key as a bearer token or, as `curl -u sk_…:` sends it, as the
/// HTTP Basic user name with an empty password.
fn authorize(psp: &Psp, headers: &HeaderMap) -> Result<(), StripeError> {
    let expected = psp.settings.stripe.secret_key.expose();
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let given = if let Some(token) = value.strip_prefix("Bearer ") {
        Some(token.to_owned())
    } else {
        value
            .strip_prefix("Basic ")
            .and_then(|b64| {
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(user, _)| user.to_owned()))
    };
    match given {
        Some(key) if !expected.is_empty() && key == expected => Ok(()),
        _ => Err(StripeError::Unauthorized),
    }
}

/// Any other path under `/stripe`, answered as Stripe answers an unknown URL.
async fn unknown_url(method: http::Method, uri: http::Uri) -> Response {
    let path = uri.path().strip_prefix("/stripe").unwrap_or(uri.path());
    let error = json!({"type": "invalid_request_error",
        "message": format!("Unrecognized request URL ({method}: {path}).")});
    (StatusCode::NOT_FOUND, axum::Json(json!({ "error": error }))).into_response()
}

fn read(
    psp: &Psp,
    headers: &HeaderMap,
    id: Id,
    f: impl FnOnce(&Books, &str) -> Result<Value, StripeError>,
) -> Response {
    let result = authorize(psp, headers).and_then(|()| {
        let Path(id) = id.map_err(|e| StripeError::invalid("id", e.body_text()))?;
        psp.with_ledger(|ledger, _| f(&ledger.stripe, &id))
    });
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// An operation on one object named in the path.
type IdOp = fn(&mut Books, &str, &Params, &Ctx, &mut Outbox) -> Result<Value, StripeError>;
/// An operation on a collection.
type Op = fn(&mut Books, (), &Params, &Ctx, &mut Outbox) -> Result<Value, StripeError>;

fn with_id(
    psp: &Psp,
    headers: &HeaderMap,
    id: Id,
    action: &str,
    body: &[u8],
    op: IdOp,
) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return StripeError::invalid("id", e.body_text()).into_response(),
    };
    let path = format!("/v1/{id}/{action}");
    run(psp, headers, &path, body, |b, p, c, o| op(b, &id, p, c, o))
}

fn call(psp: &Psp, headers: &HeaderMap, path: &str, body: &[u8], op: Op) -> Response {
    run(psp, headers, path, body, |b, p, c, o| op(b, (), p, c, o))
}

/// Auth, form parsing, the idempotency check, the operation and its webhooks, in that order.
fn run(
    psp: &Psp,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    op: impl FnOnce(&mut Books, &Params, &Ctx, &mut Outbox) -> Result<Value, StripeError>,
) -> Response {
    if let Err(e) = authorize(psp, headers) {
        return e.into_response();
    }
    let params = match Params::parse(body) {
        Ok(params) => params,
        Err(e) => return e.into_response(),
    };
    let key = headers
        .get("Idempotency-Key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fingerprint = format!("POST {path}?{:?}", params.0);
    let ctx = Ctx {
        base_url: psp.base_url().to_owned(),
        default_scenario: psp.settings.scenario.clone(),
    };
    psp.with_ledger(|ledger, outbox| {
        let books = &mut ledger.stripe;
        if let Some(key) = &key {
            match books.idempotency.check(key, &fingerprint) {
                Replay::Miss => {}
                Replay::Same(status, body) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    return (status, [("Idempotent-Replayed", "true")], axum::Json(body))
                        .into_response();
                }
                Replay::Conflict => return StripeError::Idempotency.into_response(),
            }
        }
        match op(books, &params, &ctx, outbox) {
            Ok(value) => {
                if let Some(key) = &key {
                    books.idempotency.remember(key, fingerprint, 200, &value);
                }
                axum::Json(value).into_response()
            }
            Err(e) => e.into_response(),
        }
    })
}
