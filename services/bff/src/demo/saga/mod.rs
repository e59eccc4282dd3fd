//! `POST /api/demo/saga`: an order through the whole checkout saga, with the buyer's choice made
//! on the sandbox PSP — `success` (approve: stock committed, payment captured, `Completed`),
//! `payment-declined` (decline: stock released, `Cancelled`), and `last-unit-race` (two buyers
//! for the one unit left: one `Completed`, one `Rejected`, stock never negative), and
//! `payment-expired` (the order asks for a payment window of a few seconds — orders takes that
//! only with the BFF's `demo`-scoped token — the session is left unpaid, checkout's deadline
//! fires: stock released, session voided, `Cancelled`; then the buyer tries to pay late); and
//! `idempotent-retry`. One module per scenario; `services` holds the calls they share. The
//! evidence is each order's saga history as orders recorded it, the payment as payments recorded
//! it, and the product's stock before and after.

use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use lab_http::{Json, Problem};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

mod expired;
mod paid;
mod race;
mod retry;
mod services;

pub(super) use services::Services;

use expired::{DEFAULT_PAYMENT_WINDOW_S, PAYMENT_WINDOW_S};

use super::{DemoReport, Run, upstream_failed};
use crate::AppState;
use crate::session::Visitor;

/// How long the saga may take to reach its final state: a handful of hops over RabbitMQ and two
/// PSP round trips take well under a second on a healthy cluster; a chaos run may slow it.
const SAGA_DEADLINE: Duration = Duration::from_secs(30);
/// How long payments may take to open the PSP session after the order is placed.
const SESSION_DEADLINE: Duration = Duration::from_secs(15);
/// Polling period while waiting on the services.
const POLL: Duration = Duration::from_millis(100);
/// The demo products (catalog's seed): one with plenty of stock, one kept at a single unit.
pub(super) const PLENTY_SKU: &str = "DEMO-RACE";
const LAST_UNIT_SKU: &str = "DEMO-LAST-UNIT";
/// Below this the plenty product is restocked before a run, so demos never run dry.
pub(super) const RESTOCK_BELOW: i64 = 10;
pub(super) const RESTOCK_TO: i64 = 100;

/// The scenarios this demo runs.
const SCENARIOS: &[&str] = &[
    "success",
    "payment-declined",
    "last-unit-race",
    "idempotent-retry",
    "payment-expired",
];

/// Which saga to run.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SagaDemo {
    /// `success`, `payment-declined`, `last-unit-race`, `idempotent-retry` or `payment-expired`.
    pub scenario: String,
    /// `stripe` (default) or `paypal`.
    #[serde(default)]
    pub provider: Option<String>,
    /// `payment-expired` only: the payment window in seconds, 2–30 (default 5).
    #[serde(default)]
    pub payment_window_s: Option<u32>,
}

/// Runs one saga scenario end to end.
#[utoipa::path(post, path = "/api/demo/saga", tag = "demo", request_body = SagaDemo, responses(
    (status = 200, body = super::DemoReport), (status = 422, body = lab_http::Problem),
    (status = 502, body = lab_http::Problem), (status = 503, body = lab_http::Problem)))]
pub(crate) async fn run_saga(
    State(state): State<AppState>,
    visitor: Option<Extension<Visitor>>,
    Json(body): Json<SagaDemo>,
) -> Result<Json<DemoReport>, Problem> {
    let provider = body.provider.unwrap_or_else(|| "stripe".to_owned());
    let session = visitor.map(|Extension(v)| v.session.to_string());
    if body.scenario == "payment-expired" || body.payment_window_s.is_some() {
        let window = body.payment_window_s.unwrap_or(DEFAULT_PAYMENT_WINDOW_S);
        if body.scenario != "payment-expired" || !PAYMENT_WINDOW_S.contains(&window) {
            return Err(Problem::invalid_field(
                "payment_window_s",
                format!(
                    "{} to {} seconds, for the payment-expired scenario only",
                    PAYMENT_WINDOW_S.start(),
                    PAYMENT_WINDOW_S.end()
                ),
            ));
        }
        if provider != "stripe" && provider != "paypal" {
            return Err(Problem::invalid_field("provider", "`stripe` or `paypal`"));
        }
        return expired::run(&state, session, provider, window)
            .await
            .map(Json);
    }
    saga(&state, session, body.scenario, provider)
        .await
        .map(Json)
}

/// Runs `scenario` for `session` (its steps pushed to that visitor; none for a background
/// journey).
pub(crate) async fn saga(
    state: &AppState,
    session: Option<String>,
    scenario: String,
    provider: String,
) -> Result<DemoReport, Problem> {
    if provider != "stripe" && provider != "paypal" {
        return Err(Problem::invalid_field("provider", "`stripe` or `paypal`"));
    }
    if !SCENARIOS.contains(&scenario.as_str()) {
        return Err(not_a_scenario(&scenario));
    }
    let services = Services::of(state)?;
    let run = Run::new(state, "saga", session);
    let customer = format!("demo:{}", Uuid::now_v7());
    match scenario.as_str() {
        "success" | "payment-declined" => {
            paid::run(&services, run, &scenario, &customer, &provider).await
        }
        "idempotent-retry" => retry::run(&services, run, &scenario, &customer, &provider).await,
        "last-unit-race" => race::run(&services, run, &scenario, &customer, &provider).await,
        // `payment-expired` comes through `run_saga`, with its window.
        other => Err(not_a_scenario(other)),
    }
}

fn not_a_scenario(scenario: &str) -> Problem {
    Problem::invalid_field(
        "scenario",
        format!(
            "`{scenario}` is not a saga scenario: {}",
            SCENARIOS.join(", ")
        ),
    )
}

/// Whether an order view is in a final state.
pub(super) fn is_final(view: &Value) -> bool {
    view["status"].as_str().is_some_and(|s| s != "Pending")
}

/// Calls `probe` every [`POLL`] until it yields a value or `within` has passed (then `None`); a
/// failed call ends the wait with its problem.
pub(super) async fn poll<T, F, Fut>(within: Duration, mut probe: F) -> Result<Option<T>, Problem>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Problem>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await? {
            return Ok(Some(value));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`poll`] that must yield: nothing within `within` is a failure of `(service, doing)`, said as
/// `missing`.
pub(super) async fn wait_for<T, F, Fut>(
    within: Duration,
    (service, doing): (&str, &str),
    missing: String,
    probe: F,
) -> Result<T, Problem>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, Problem>>,
{
    poll(within, probe)
        .await?
        .ok_or_else(|| upstream_failed(service, doing, missing))
}

pub(super) fn id_of(product: &Value) -> &str {
    product["id"].as_str().unwrap_or_default()
}
