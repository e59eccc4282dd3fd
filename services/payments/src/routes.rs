//! The payments HTTP API: the webhooks ([`crate::webhooks`]), a payment with its history for
//! operators and tests, and the admin view of the outbox and dead letters.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use lab_config::SecretString;
use lab_http::{Json, Path, Problem};
use lab_messaging::{Broker, MessagingError, Topology, dead_letters, outbox};
use serde::Serialize;
use uuid::Uuid;

use crate::auth::Admin;
use crate::metrics::PaymentsMetrics;
use crate::store::{self, EventRecord, Payment, StoreError};
use crate::webhooks::{self, paypal::PayPalVerifier};

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
    /// The administrator's bearer token; unset means nobody is one.
    pub admin_token: Option<Arc<SecretString>>,
    /// For replaying dead letters.
    pub broker: Broker,
    /// This service's queues.
    pub topology: Topology,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/webhooks/stripe", post(webhooks::stripe_webhook))
        .route("/webhooks/paypal", post(webhooks::paypal_webhook))
        .route("/payments/{order_id}", get(get_payment))
        .route("/admin/outbox", get(outbox_status))
        .route("/admin/outbox/pause", post(pause_outbox))
        .route("/admin/outbox/resume", post(resume_outbox))
        .route("/admin/dead-letters", get(list_dead_letters))
        .route("/admin/dead-letters/{id}/replay", post(replay_dead_letter))
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

fn messaging_problem(e: MessagingError) -> Problem {
    match e {
        MessagingError::NoSuchDeadLetter(id) => Problem::not_found(format!("no dead letter {id}")),
        MessagingError::Db(e) => store_problem(StoreError::Db(e)),
        e => {
            tracing::error!(error = %e, "messaging operation failed");
            Problem::unavailable("rabbitmq", e.to_string())
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

/// The outbox as an operator sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    /// Messages written but not yet confirmed by the broker.
    pub pending: i64,
    /// Age of the oldest of them in milliseconds; 0 when none.
    pub oldest_pending_age_ms: u128,
    /// Whether the relays are paused.
    pub paused: bool,
}

/// The outbox backlog and pause flag.
#[utoipa::path(get, path = "/admin/outbox", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem)))]
pub async fn outbox_status(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<OutboxView>, Problem> {
    let s = outbox::status(&state.pool)
        .await
        .map_err(messaging_problem)?;
    Ok(Json(OutboxView {
        pending: s.pending,
        oldest_pending_age_ms: s.oldest_pending_age.as_millis(),
        paused: s.paused,
    }))
}

/// Stops the relays publishing (durably) until resumed.
#[utoipa::path(post, path = "/admin/outbox/pause", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem)))]
pub async fn pause_outbox(
    admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<OutboxView>, Problem> {
    outbox::pause(&state.pool)
        .await
        .map_err(messaging_problem)?;
    tracing::warn!("outbox paused by the administrator");
    outbox_status(admin, State(state)).await
}

/// Lets the relays publish again; they drain the backlog.
#[utoipa::path(post, path = "/admin/outbox/resume", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem)))]
pub async fn resume_outbox(
    admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<OutboxView>, Problem> {
    outbox::resume(&state.pool)
        .await
        .map_err(messaging_problem)?;
    tracing::info!("outbox resumed by the administrator");
    outbox_status(admin, State(state)).await
}

/// How many dead letters the list shows, newest first.
const DEAD_LETTER_PAGE: i64 = 100;

/// A dead letter as listed (lab-messaging's record).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterDoc {
    pub id: i64,
    pub message_id: Uuid,
    pub message_type: String,
    pub error: String,
    pub attempts: i32,
    pub replay_count: i32,
}

/// The newest dead letters.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [DeadLetterDoc]), (status = 401, body = Problem)))]
pub async fn list_dead_letters(
    _admin: Admin,
    State(state): State<AppState>,
) -> Result<Json<Vec<dead_letters::DeadLetter>>, Problem> {
    Ok(Json(
        dead_letters::list(&state.pool, DEAD_LETTER_PAGE)
            .await
            .map_err(messaging_problem)?,
    ))
}

/// Publishes a dead letter back to the payments queue.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = DeadLetterDoc), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn replay_dead_letter(
    _admin: Admin,
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> Result<Json<dead_letters::DeadLetter>, Problem> {
    let replayed = dead_letters::replay(&state.pool, &state.broker, &state.topology, id)
        .await
        .map_err(messaging_problem)?;
    tracing::info!(id, message_id = %replayed.message_id, "dead letter replayed");
    Ok(Json(replayed))
}
