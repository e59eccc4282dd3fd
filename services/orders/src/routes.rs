//! The orders HTTP API: idempotent claims, placing an order under an `Idempotency-Key`, and
//! reading an order with its saga history (owner only).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use lab_http::{Json, Path, Problem};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Requester;
use crate::domain::{self, ClaimKey, Invalid, OrderStatus, Provider, Ttl};
use crate::orders::{self, LineView, NewOrder, OrderError, Placed, Transition};
use crate::prices::{Catalog, PriceError};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    /// Where prices come from.
    pub catalog: Catalog,
    /// Placements, replays, claims.
    pub metrics: crate::metrics::OrdersMetrics,
    pub settings: Arc<crate::Settings>,
    /// Checks identity's access tokens: a signed-in customer, an administrator.
    pub verifier: lab_auth::Verifier,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(get_order))
        .route("/invariants", get(crate::invariants::get_invariants))
        .merge(crate::claims::router())
        .with_state(state)
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::invalid_field(&e.field, e.reason)
    }
}

/// A database failure: logged once here, answered as 503 (the database, not the request, is at fault).
pub fn db_problem(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable("postgres", lab_db::short_reason(&e))
}

fn order_problem(e: OrderError) -> Problem {
    match e {
        OrderError::Db(e) => db_problem(e),
        e => {
            tracing::error!(error = %e, "placing an order failed");
            Problem::internal()
        }
    }
}

pub use crate::auth::CUSTOMER_HEADER;
/// The header that makes `POST /orders` safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

fn idempotency_key(headers: &HeaderMap) -> Result<ClaimKey, Problem> {
    let invalid = || {
        Problem::typed(
            StatusCode::BAD_REQUEST,
            "idempotency-key-required",
            "Idempotency-Key is required",
        )
    };
    let raw = headers.get(IDEMPOTENCY_KEY).ok_or_else(|| {
        invalid().detail("send a unique Idempotency-Key, and the same one when you retry")
    })?;
    let raw = raw
        .to_str()
        .map_err(|_| invalid().detail("Idempotency-Key is not visible ASCII"))?;
    ClaimKey::parse("Idempotency-Key", raw).map_err(|e| invalid().detail(e.to_string()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WantedLine {
    product_id: Uuid,
    /// 1–100.
    quantity: i64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// 1–20 lines.
    lines: Vec<WantedLine>,
    /// `stripe` or `paypal`.
    provider: String,
    /// Demo only (the BFF's `demo`-scoped token): the payment window in seconds, 2–30, instead of
    /// checkout's 15 minutes, so the payment-expiry demo sees the deadline fire.
    #[serde(default)]
    payment_window_s: Option<u32>,
}

/// The shortest and longest payment window a demo may ask for: under 2 s the PSP session may
/// expire before the buyer could even see it; 30 s bounds how long a demo holds its stock.
const DEMO_PAYMENT_WINDOW_S: std::ops::RangeInclusive<u32> = 2..=30;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Links {
    #[serde(rename = "self")]
    pub self_: String,
}

/// The answer to `POST /orders`, the same for every repeat of the key.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub order_id: Uuid,
    pub status: OrderStatus,
    /// Where to watch the order.
    pub links: Links,
}

fn accepted(order_id: Uuid, status: OrderStatus, replayed: bool) -> Response {
    let path = format!("/orders/{order_id}");
    let mut response = (
        StatusCode::ACCEPTED,
        Json(Accepted {
            order_id,
            status,
            links: Links {
                self_: path.clone(),
            },
        }),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&path) {
        headers.insert(header::LOCATION, location);
    }
    if replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

fn key_reused() -> Problem {
    Problem::typed(
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency-key-reused",
        "Idempotency-Key reused with a different request",
    )
    .detail("this key already placed an order with other lines or another provider; use a new key")
}

fn repeat(
    state: &AppState,
    existing: &orders::Existing,
    provider: Provider,
    wanted: &[domain::Wanted],
) -> Response {
    if existing.same_request(provider, wanted) {
        state.metrics.replayed.inc();
        accepted(existing.order_id, existing.status, true)
    } else {
        state.metrics.key_reused.inc();
        key_reused().into_response()
    }
}

/// Places an order: prices from catalog, then the claim, the order and its `OrderPlaced` event in
/// one transaction. 202 with where to watch it; a repeat of the key answers the same order.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = PlaceOrder,
    params(("Idempotency-Key" = String, Header, description = "1–255 printable characters; the same on every retry"),
           ("X-Lab-Customer" = Option<String>, Header, description = "a visitor's session (set by the BFF); ignored with a user's bearer token")),
    responses((status = 202, body = Accepted), (status = 400, body = Problem), (status = 401, body = Problem),
              (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn place_order(
    State(state): State<AppState>,
    Requester { customer, demo, .. }: Requester,
    headers: HeaderMap,
    Json(body): Json<PlaceOrder>,
) -> Result<Response, Problem> {
    let key = idempotency_key(&headers)?;
    if let Some(window) = body.payment_window_s {
        if !demo {
            return Err(lab_auth::extract::forbidden(
                "only the BFF's demo token may choose the payment window".into(),
                Some("demo"),
            ));
        }
        if !DEMO_PAYMENT_WINDOW_S.contains(&window) {
            return Err(Problem::invalid_field(
                "payment_window_s",
                format!(
                    "{} to {} seconds",
                    DEMO_PAYMENT_WINDOW_S.start(),
                    DEMO_PAYMENT_WINDOW_S.end()
                ),
            ));
        }
    }
    let raw: Vec<(Uuid, i64)> = body
        .lines
        .iter()
        .map(|l| (l.product_id, l.quantity))
        .collect();
    let wanted = domain::parse_lines(&raw)?;
    let provider = Provider::parse(&body.provider)?;

    // A retry of a placed order answers from the database: no catalog call, same order.
    if let Some(existing) = orders::find_claimed(&state.pool, &customer, &key)
        .await
        .map_err(order_problem)?
    {
        return Ok(repeat(&state, &existing, provider, &wanted));
    }

    let mut ids: Vec<Uuid> = wanted.iter().map(|w| w.product_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let results = futures::future::join_all(ids.iter().map(|id| state.catalog.price(*id))).await;
    let mut prices = Vec::with_capacity(results.len());
    for result in results {
        match result {
            Ok(priced) => prices.push(priced),
            Err(PriceError::Unknown(id)) => {
                let i = wanted.iter().position(|w| w.product_id == id).unwrap_or(0);
                return Err(Problem::invalid_field(
                    &format!("lines[{i}].product_id"),
                    format!("catalog has no product {id}"),
                ));
            }
            Err(PriceError::Unavailable(reason)) => {
                tracing::warn!(reason, "catalog unavailable while pricing an order");
                return Err(Problem::unavailable("catalog", reason));
            }
        }
    }
    let (lines, currency, total_minor) = orders::price_lines(&wanted, &prices).map_err(|i| {
        Problem::invalid_field(
            &format!("lines[{i}].product_id"),
            "every line of an order must be priced in the same currency",
        )
    })?;
    let order = NewOrder {
        customer,
        key,
        provider,
        currency,
        lines,
        total_minor,
        payment_window_s: body.payment_window_s,
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| well_formed_traceparent(v))
            .map(str::to_owned),
    };
    let ttl = Ttl::parse(state.settings.order_claim_ttl_s)?;
    match orders::place(&state.pool, &order, ttl)
        .await
        .map_err(order_problem)?
    {
        Placed::New { order_id } => {
            state.metrics.placed.inc();
            Ok(accepted(order_id, OrderStatus::Pending, false))
        }
        Placed::Repeat(existing) => Ok(repeat(&state, &existing, provider, &wanted)),
    }
}

/// `00-<32 hex>-<16 hex>-<2 hex>`: anything else would break the trace downstream.
fn well_formed_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 4
        && parts
            .iter()
            .zip([2, 32, 16, 2])
            .all(|(p, n)| p.len() == n && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Total {
    pub amount_minor: i64,
    pub currency: String,
}

/// How the order ended, once the saga reached a terminal state.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    pub status: OrderStatus,
    /// Every compensation the saga issued (`ReleaseStock`, `VoidPayment`, `RefundPayment`), in
    /// the order first seen, late ones included.
    pub compensations: Vec<String>,
    pub decided_at: Option<DateTime<Utc>>,
}

/// An order as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    pub order_id: Uuid,
    pub status: OrderStatus,
    pub provider: String,
    pub lines: Vec<LineView>,
    pub total: Total,
    pub placed_at: DateTime<Utc>,
    /// The saga's latest state as reported to orders; none before its first transition.
    pub saga_state: Option<String>,
    /// Set once the order is final.
    pub outcome: Option<Outcome>,
    /// Every saga transition orders has seen, in the order they happened.
    pub history: Vec<Transition>,
    pub links: Links,
}

/// The order with its lines, status, outcome and saga history; 404 unless the caller owns it or
/// holds the `admin` role (not 403: an order id says nothing about whether it exists).
#[utoipa::path(get, path = "/orders/{id}", tag = "orders",
    params(("X-Lab-Customer" = Option<String>, Header, description = "a visitor's session (set by the BFF); ignored with a user's bearer token")),
    responses((status = 200, body = OrderView), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    requester: Requester,
) -> Result<Json<OrderView>, Problem> {
    let not_found = || Problem::not_found(format!("no order {id}"));
    let (order, lines, history) = orders::get(&state.pool, id)
        .await
        .map_err(order_problem)?
        .ok_or_else(not_found)?;
    if order.customer != requester.customer.as_str() && !requester.admin {
        return Err(not_found());
    }
    let status = OrderStatus::parse(&order.status).unwrap_or(OrderStatus::Pending);
    let outcome = (status != OrderStatus::Pending).then(|| {
        let mut compensations: Vec<String> = Vec::new();
        for c in history.iter().flat_map(|t| &t.compensations) {
            if !compensations.contains(c) {
                compensations.push(c.clone());
            }
        }
        Outcome {
            status,
            compensations,
            decided_at: order.finished_at,
        }
    });
    Ok(Json(OrderView {
        order_id: order.id,
        status,
        provider: order.provider,
        lines,
        total: Total {
            amount_minor: order.total_minor,
            currency: order.currency,
        },
        placed_at: order.placed_at,
        saga_state: history.last().map(|t| t.to.clone()),
        outcome,
        history,
        links: Links {
            self_: format!("/orders/{}", order.id),
        },
    }))
}
