//! The payments HTTP API: the webhooks ([`crate::webhooks`]), a payment with its history for
//! operators and tests, and lab-messaging's admin routes (outbox, dead letters) behind the
//! administrator's token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::middleware::from_extractor_with_state;
use axum::routing::{get, post};
use lab_config::SecretString;
use lab_http::{Json, Path, Problem};
use lab_messaging::{Broker, Topology, admin};
use serde::Serialize;
use uuid::Uuid;

use crate::metrics::PaymentsMetrics;
use crate::store::{self, EventRecord, Payment, StoreError};
use crate::webhooks::{self, paypal::PayPalVerifier};
use lab_auth::{AdminGate, RequireAdmin};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: sqlx::PgPool,
    /// Mismatches, refused and duplicate webhooks.
    pub metrics: PaymentsMetrics,
    /// Stripe webhook secrets; any one of them may have signed (rotation).
    pub stripe_secrets: Arc<[SecretString]>,
    /// How far a Stripe signature's timestamp may be from now.
    pub stripe_tolerance_s: i64,
    /// PayPal transmission verification (certificate fetch, cache, CA).
    pub paypal: Arc<PayPalVerifier>,
    /// Who is an administrator (the operator's break-glass token; payments takes no identity
    /// tokens yet); unset means nobody is one.
    pub admin: AdminGate,
    /// For replaying dead letters.
    pub broker: Broker,
    /// This service's queues.
    pub topology: Topology,
}

impl FromRef<AppState> for AdminGate {
    fn from_ref(state: &AppState) -> Self {
        state.admin.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(webhooks::stripe_webhook))
        .route("/webhooks/paypal", post(webhooks::paypal_webhook))
        .route("/payments/{order_id}", get(get_payment))
        .route("/invariants", get(crate::invariants::get_invariants))
        .merge(
            admin::router(admin::MessagingAdmin {
                pool: state.pool.clone(),
                broker: state.broker.clone(),
                topology: state.topology.clone(),
            })
            // The shared routes answer only the administrator (lab_auth::admin).
            .route_layer(from_extractor_with_state::<RequireAdmin, AppState>(
                state.clone(),
            )),
        )
        .with_state(state)
}

/// A storage failure: logged once here, answered 503 (the database, not the request, is at
/// fault; a provider delivering a webhook retries it).
pub fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::Db(e) => {
            tracing::error!(error = %e, "database error");
            Problem::unavailable("postgres", lab_db::short_reason(&e))
        }
        e => {
            tracing::error!(error = %e, "storing a payment failed");
            Problem::internal()
        }
    }
}

/// A payment with its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PaymentView {
    #[serde(flatten)]
    pub payment: Payment,
    /// Every webhook and command that touched it, oldest first.
    pub events: Vec<EventRecord>,
}

/// The payment of an order: provider ids, state, amounts and history.
#[utoipa::path(get, path = "/payments/{order_id}", tag = "payments",
    params(("order_id" = Uuid, Path, description = "The order the payment is for")),
    responses((status = 200, body = PaymentView), (status = 404, body = Problem)))]
pub async fn get_payment(
    State(state): State<AppState>,
    Path(order_id): Path<Uuid>,
) -> Result<Json<PaymentView>, Problem> {
    let payment = store::get(&state.pool, order_id)
        .await
        .map_err(store_problem)?
        .ok_or_else(|| Problem::not_found(format!("no payment for order {order_id}")))?;
    let events = store::history(&state.pool, order_id)
        .await
        .map_err(store_problem)?;
    Ok(Json(PaymentView { payment, events }))
}
