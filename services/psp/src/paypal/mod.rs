//! The PayPal-like API under `/paypal`: OAuth client credentials, checkout orders with intent
//! `AUTHORIZE`, capture, void, refund, and the webhook certificate.
//!
//! Bodies are JSON; errors are PayPal's `{"name","message","debug_id","details"}`; every POST
//! honours `PayPal-Request-Id`. The objects live in `books.rs`, their transitions in `ops.rs`;
//! this file is the HTTP edge.

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

use crate::sandbox::{MIXED, Outbox, Psp, Replay, new_id, now};
pub use books::Books;
pub use ops::{approve, decline};

/// PayPal's access tokens live 9 hours.
const TOKEN_LIFETIME_S: i64 = 32_400;

/// A PayPal error, named and shaped as PayPal answers it.
#[derive(Debug, thiserror::Error)]
pub enum PaypalError {
    #[error(
        "Authentication failed due to invalid authentication credentials or a missing Authorization header."
    )]
    Unauthorized,
    #[error("Request is not well-formed, syntactically incorrect, or violates schema.")]
    Invalid {
        field: String,
        issue: &'static str,
        description: String,
    },
    #[error("The specified resource does not exist.")]
    NotFound(String),
    #[error(
        "The requested action could not be performed, semantically incorrect, or failed business validation."
    )]
    Unprocessable {
        issue: &'static str,
        description: String,
    },
}

impl PaypalError {
    pub fn invalid(field: &str, description: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            issue: "INVALID_PARAMETER_VALUE",
            description: description.into(),
        }
    }

    pub fn unprocessable(issue: &'static str, description: impl Into<String>) -> Self {
        Self::Unprocessable {
            issue,
            description: description.into(),
        }
    }
}

impl IntoResponse for PaypalError {
    fn into_response(self) -> Response {
        let (status, name, details) = match &self {
            Self::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_FAILURE",
                json!([]),
            ),
            Self::Invalid {
                field,
                issue,
                description,
            } => (
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                json!([{"field": format!("/{field}"), "location": "body", "issue": issue, "description": description}]),
            ),
            Self::NotFound(id) => (
                StatusCode::NOT_FOUND,
                "RESOURCE_NOT_FOUND",
                json!([{"issue": "INVALID_RESOURCE_ID", "description": format!("no resource {id}")}]),
            ),
            Self::Unprocessable { issue, description } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "UNPROCESSABLE_ENTITY",
                json!([{"issue": issue, "description": description}]),
            ),
        };
        let body = json!({"name": name, "message": self.to_string(), "debug_id": new_id("", 13, b"0123456789abcdef"),
            "details": details});
        (status, axum::Json(body)).into_response()
    }
}

pub fn router() -> axum::Router<Psp> {
    axum::Router::new()
        .route("/paypal/v1/oauth2/token", post(create_token))
        .route("/paypal/v2/checkout/orders", post(create_order))
        .route("/paypal/v2/checkout/orders/{id}", get(get_order))
        .route(
            "/paypal/v2/payments/authorizations/{id}/capture",
            post(capture_authorization),
        )
        .route(
            "/paypal/v2/payments/authorizations/{id}/void",
            post(void_authorization),
        )
        .route(
            "/paypal/v2/payments/captures/{id}/refund",
            post(refund_capture),
        )
        .route("/paypal/certs/{name}", get(get_certificate))
        .route("/paypal/{*rest}", any(unknown_url))
}

type Id = Result<Path<String>, PathRejection>;

/// Client credentials (HTTP Basic) for a bearer token.
#[utoipa::path(post, path = "/paypal/v1/oauth2/token", tag = "paypal",
    request_body(content_type = "application/x-www-form-urlencoded", description = "grant_type=client_credentials"),
    responses((status = 200, description = "access_token, token_type, expires_in"), (status = 400, description = "bad grant type"), (status = 401, description = "bad client credentials")))]
pub async fn create_token(State(psp): State<Psp>, headers: HeaderMap, body: Bytes) -> Response {
    let paypal = &psp.settings.paypal;
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b64| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let expected = format!("{}:{}", paypal.client_id, paypal.client_secret.expose());
    if credentials.as_deref() != Some(expected.as_str()) {
        return PaypalError::Unauthorized.into_response();
    }
    let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if !form
        .iter()
        .any(|(k, v)| k == "grant_type" && v == "client_credentials")
    {
        return PaypalError::invalid("grant_type", "must be client_credentials").into_response();
    }
    let token = new_id("A21AA", 92, MIXED);
    let issued = now();
    psp.with_ledger(|ledger, _| {
        let tokens = &mut ledger.paypal.tokens;
        tokens.retain(|_, expiry| *expiry > issued);
        tokens.insert(token.clone(), issued + TOKEN_LIFETIME_S);
    });
    axum::Json(json!({"scope": "https://uri.paypal.com/services/payments/payment", "access_token": token,
        "token_type": "Bearer", "app_id": "APP-LAB-SANDBOX", "expires_in": TOKEN_LIFETIME_S, "nonce": new_id("", 20, MIXED)}))
        .into_response()
}

/// Creates an order (intent `AUTHORIZE`, one purchase unit) with its approve link.
#[utoipa::path(post, path = "/paypal/v2/checkout/orders", tag = "paypal", request_body(content_type = "application/json", description = "intent, purchase_units"),
    responses((status = 201, description = "the order"), (status = 400, description = "INVALID_REQUEST"), (status = 401, description = "AUTHENTICATION_FAILURE")))]
pub async fn create_order(State(psp): State<Psp>, headers: HeaderMap, body: Bytes) -> Response {
    let default = psp.settings.scenario.clone();
    let base = psp.base_url().to_owned();
    run(
        &psp,
        &headers,
        "/v2/checkout/orders",
        &body,
        true,
        |b, v, o| ops::create_order(b, v, &default, &base, o),
    )
}

/// The order, with its authorizations, captures and refunds once they exist.
#[utoipa::path(get, path = "/paypal/v2/checkout/orders/{id}", tag = "paypal",
    responses((status = 200, description = "the order"), (status = 401, description = "AUTHENTICATION_FAILURE"), (status = 404, description = "RESOURCE_NOT_FOUND")))]
pub async fn get_order(State(psp): State<Psp>, headers: HeaderMap, id: Id) -> Response {
    let result = authorize(&psp, &headers).and_then(|()| {
        let Path(id) = id.map_err(|e| PaypalError::invalid("id", e.body_text()))?;
        psp.with_ledger(|ledger, _| ledger.paypal.order_json(&id))
    });
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Captures an authorization (all of it, or `amount`).
#[utoipa::path(post, path = "/paypal/v2/payments/authorizations/{id}/capture", tag = "paypal",
    responses((status = 201, description = "the capture"), (status = 404, description = "RESOURCE_NOT_FOUND"), (status = 422, description = "not capturable, or refused by the scenario")))]
pub async fn capture_authorization(
    State(psp): State<Psp>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    with_id(&psp, &headers, id, "capture", &body, ops::capture)
}

/// Voids an authorization.
#[utoipa::path(post, path = "/paypal/v2/payments/authorizations/{id}/void", tag = "paypal",
    responses((status = 200, description = "the authorization"), (status = 404, description = "RESOURCE_NOT_FOUND"), (status = 422, description = "not voidable")))]
pub async fn void_authorization(
    State(psp): State<Psp>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    with_id(&psp, &headers, id, "void", &body, ops::void)
}

/// Refunds a capture (all that is left, or `amount`).
#[utoipa::path(post, path = "/paypal/v2/payments/captures/{id}/refund", tag = "paypal",
    responses((status = 201, description = "the refund"), (status = 404, description = "RESOURCE_NOT_FOUND"), (status = 422, description = "not refundable")))]
pub async fn refund_capture(
    State(psp): State<Psp>,
    headers: HeaderMap,
    id: Id,
    body: Bytes,
) -> Response {
    with_id(&psp, &headers, id, "refund", &body, ops::refund)
}

/// The webhook-signing certificate (PEM), the target of `PAYPAL-CERT-URL`.
#[utoipa::path(get, path = "/paypal/certs/{name}", tag = "paypal",
    responses((status = 200, description = "the PEM certificate"), (status = 404, description = "RESOURCE_NOT_FOUND")))]
pub async fn get_certificate(State(psp): State<Psp>, name: Id) -> Response {
    let name = name.map(|Path(name)| name).unwrap_or_default();
    if name != "leaf.pem" {
        return PaypalError::NotFound(name).into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        psp.leaf_cert_pem.to_string(),
    )
        .into_response()
}

/// Any other path under `/paypal`.
async fn unknown_url(uri: http::Uri) -> Response {
    PaypalError::NotFound(uri.path().to_owned()).into_response()
}

fn authorize(psp: &Psp, headers: &HeaderMap) -> Result<(), PaypalError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(PaypalError::Unauthorized)?;
    let at = now();
    psp.with_ledger(|ledger, _| match ledger.paypal.tokens.get(token) {
        Some(expiry) if *expiry > at => Ok(()),
        _ => Err(PaypalError::Unauthorized),
    })
}

type Op = fn(&mut Books, &str, &Value, &mut Outbox) -> Result<(u16, Value), PaypalError>;

fn with_id(psp: &Psp, headers: &HeaderMap, id: Id, action: &str, body: &[u8], op: Op) -> Response {
    let id = match id {
        Ok(Path(id)) => id,
        Err(e) => return PaypalError::invalid("id", e.body_text()).into_response(),
    };
    let path = format!("/v2/{id}/{action}");
    run(psp, headers, &path, body, false, |b, v, o| op(b, &id, v, o))
}

/// Auth, JSON parsing, the request-id check, the operation and its webhooks, in that order.
/// `required`: whether the body must be present (capture, void and refund take an empty one).
fn run(
    psp: &Psp,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
    required: bool,
    op: impl FnOnce(&mut Books, &Value, &mut Outbox) -> Result<(u16, Value), PaypalError>,
) -> Response {
    if let Err(e) = authorize(psp, headers) {
        return e.into_response();
    }
    let value = if body.iter().all(u8::is_ascii_whitespace) && !required {
        Value::Object(Default::default())
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(value) if value.is_object() => value,
            _ => {
                return PaypalError::Invalid {
                    field: String::new(),
                    issue: "MALFORMED_REQUEST_JSON",
                    description: "the body is not a JSON object".into(),
                }
                .into_response();
            }
        }
    };
    let key = headers
        .get("PayPal-Request-Id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    // serde_json's maps are sorted, so the same JSON in another key order is the same request.
    let fingerprint = format!("POST {path} {value}");
    psp.with_ledger(|ledger, outbox| {
        let books = &mut ledger.paypal;
        if let Some(key) = &key {
            match books.idempotency.check(key, &fingerprint) {
                Replay::Miss => {}
                Replay::Same(status, body) => {
                    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                    return (status, axum::Json(body)).into_response();
                }
                Replay::Conflict => {
                    return PaypalError::unprocessable(
                        "DUPLICATE_REQUEST_ID",
                        "this PayPal-Request-Id was already used with a different request",
                    )
                    .into_response();
                }
            }
        }
        match op(books, &value, outbox) {
            Ok((status, value)) => {
                if let Some(key) = &key {
                    books.idempotency.remember(key, fingerprint, status, &value);
                }
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                (status, axum::Json(value)).into_response()
            }
            Err(e) => e.into_response(),
        }
    })
}
