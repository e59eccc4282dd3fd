//! The sandbox's own routes: the hosted page, the buyer's approve and decline, a session's
//! scenario, and the webhook attempt log. No auth: this is the buyer and the test bench.
//! Errors here are the lab's problem+json, not a provider's shape.

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, put};
use http::StatusCode;
use lab_http::{Json, Path, Problem, Query};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::page;
use crate::sandbox::{Psp, Scenario};
use crate::webhooks::Attempt;
use crate::{paypal, stripe};

pub fn router() -> axum::Router<Psp> {
    axum::Router::new()
        .route("/pay/{id}", get(hosted_page))
        .route("/sandbox/sessions/{id}/approve", post(approve_session))
        .route("/sandbox/sessions/{id}/decline", post(decline_session))
        .route("/sandbox/sessions/{id}/scenario", put(set_scenario))
        .route("/sandbox/webhooks", get(list_webhook_attempts))
}

/// What the buyer's action did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Outcome {
    /// The session or order.
    pub id: String,
    /// `approved` or `declined`.
    pub outcome: &'static str,
    /// Its status after the action.
    pub status: String,
}

/// Which session's attempts to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AttemptFilter {
    /// A Stripe session or PayPal order id; every attempt when absent.
    pub session: Option<String>,
}

/// The hosted payment page.
#[utoipa::path(get, path = "/pay/{id}", tag = "sandbox",
    responses((status = 200, description = "the page", content_type = "text/html"), (status = 404, description = "no such session or order")))]
pub async fn hosted_page(State(psp): State<Psp>, Path(id): Path<String>) -> Response {
    let view = psp.with_ledger(|ledger, _| {
        ledger
            .stripe
            .page_view(&id)
            .or_else(|| ledger.paypal.page_view(&id))
    });
    match view {
        Some(view) => Html(page::render(&id, &view)).into_response(),
        None => (StatusCode::NOT_FOUND, Html(page::not_found(&id))).into_response(),
    }
}

/// The buyer approves (Stripe session or PayPal order).
#[utoipa::path(post, path = "/sandbox/sessions/{id}/approve", tag = "sandbox",
    responses((status = 200, body = Outcome), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn approve_session(
    State(psp): State<Psp>,
    Path(id): Path<String>,
) -> Result<Json<Outcome>, Problem> {
    act(&psp, &id, true)
}

/// The buyer declines (Stripe session or PayPal order).
#[utoipa::path(post, path = "/sandbox/sessions/{id}/decline", tag = "sandbox",
    responses((status = 200, body = Outcome), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn decline_session(
    State(psp): State<Psp>,
    Path(id): Path<String>,
) -> Result<Json<Outcome>, Problem> {
    act(&psp, &id, false)
}

fn act(psp: &Psp, id: &str, approve: bool) -> Result<Json<Outcome>, Problem> {
    psp.with_ledger(|ledger, outbox| {
        let result = if ledger.stripe.page_view(id).is_some() {
            let books = &mut ledger.stripe;
            if approve {
                stripe::approve(books, id, outbox)
            } else {
                stripe::decline(books, id, outbox)
            }
        } else if ledger.paypal.page_view(id).is_some() {
            let books = &mut ledger.paypal;
            if approve {
                paypal::approve(books, id, outbox)
            } else {
                paypal::decline(books, id, outbox)
            }
        } else {
            return Err(Problem::not_found(format!("no session or order {id}")));
        };
        result.map_err(|why| {
            Problem::typed(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_open",
                "The payment cannot be acted on",
            )
            .detail(why)
        })?;
        let status = ledger
            .stripe
            .page_view(id)
            .or_else(|| ledger.paypal.page_view(id))
            .map(|v| v.status.to_owned())
            .unwrap_or_default();
        Ok(Json(Outcome {
            id: id.to_owned(),
            outcome: if approve { "approved" } else { "declined" },
            status,
        }))
    })
}

/// Replaces a session's scenario: the knobs as JSON, or a preset's name as a JSON string.
#[utoipa::path(put, path = "/sandbox/sessions/{id}/scenario", tag = "sandbox", request_body = Scenario,
    responses((status = 200, body = Scenario), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn set_scenario(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Json<Scenario>, Problem> {
    let invalid = |detail: String| {
        Problem::typed(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Invalid scenario",
        )
        .detail(detail)
    };
    let scenario = match &body {
        Value::String(name) => {
            Scenario::preset(name).ok_or_else(|| invalid(format!("no preset named {name:?}")))?
        }
        other => serde_json::from_value(other.clone()).map_err(|e| invalid(e.to_string()))?,
    };
    let found = psp.with_ledger(|ledger, _| {
        ledger.stripe.set_scenario(&id, &scenario) || ledger.paypal.set_scenario(&id, &scenario)
    });
    if found {
        Ok(Json(scenario))
    } else {
        Err(Problem::not_found(format!("no session or order {id}")))
    }
}

/// Every webhook delivery attempt, oldest first.
#[utoipa::path(get, path = "/sandbox/webhooks", tag = "sandbox", params(AttemptFilter),
    responses((status = 200, body = [Attempt])))]
pub async fn list_webhook_attempts(
    State(psp): State<Psp>,
    Query(filter): Query<AttemptFilter>,
) -> Json<Vec<Attempt>> {
    Json(psp.webhooks.attempts(filter.session.as_deref()))
}
