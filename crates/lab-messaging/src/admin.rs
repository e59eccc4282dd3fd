//! The operator's routes over a service's messaging, one piece of code every service mounts:
//! `GET /admin/outbox` (backlog, oldest age, pause flag), `POST /admin/outbox/pause`,
//! `POST /admin/outbox/resume`, `GET /admin/dead-letters` and
//! `POST /admin/dead-letters/{id}/replay`.
//!
//! Who may call them is the service's decision: it wraps [`router`] in its own admin extractor,
//! e.g. `router(admin).route_layer(from_extractor_with_state::<Admin, _>(state))`, so these
//! routes never answer anyone the service would not.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use lab_http::{Json, Path, Problem};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Broker, MessagingError, Topology, dead_letters, outbox};

/// How many dead letters the list shows, newest first.
const DEAD_LETTER_PAGE: i64 = 100;

/// What the routes work on.
#[derive(Clone)]
pub struct MessagingAdmin {
    /// The service's pool (outbox, dead letters).
    pub pool: PgPool,
    /// For replaying dead letters.
    pub broker: Broker,
    /// The service's queues.
    pub topology: Topology,
}

/// The five routes, with their state; mount behind the service's admin check.
pub fn router<S: Clone + Send + Sync + 'static>(admin: MessagingAdmin) -> Router<S> {
    Router::new()
        .route("/admin/outbox", get(outbox_status))
        .route("/admin/outbox/pause", post(pause_outbox))
        .route("/admin/outbox/resume", post(resume_outbox))
        .route("/admin/dead-letters", get(list_dead_letters))
        .route("/admin/dead-letters/{id}/replay", post(replay_dead_letter))
        .with_state(admin)
}

/// A messaging failure as problem+json, logged once here.
fn problem(e: MessagingError) -> Problem {
    match e {
        MessagingError::NoSuchDeadLetter(id) => Problem::not_found(format!("no dead letter {id}")),
        MessagingError::Db(e) => {
            tracing::error!(error = %e, "database error");
            Problem::unavailable("postgres", e.to_string())
        }
        e => {
            tracing::error!(error = %e, "messaging operation failed");
            Problem::unavailable("rabbitmq", e.to_string())
        }
    }
}

/// The outbox as an operator sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    /// Messages written but not yet confirmed by the broker.
    pub pending: i64,
    /// Age of the oldest of them in milliseconds; 0 when none.
    pub oldest_pending_age_ms: u64,
    /// Whether the relays are paused.
    pub paused: bool,
}

async fn view(pool: &PgPool) -> Result<Json<OutboxView>, Problem> {
    let s = outbox::status(pool).await.map_err(problem)?;
    Ok(Json(OutboxView {
        pending: s.pending,
        oldest_pending_age_ms: u64::try_from(s.oldest_pending_age.as_millis()).unwrap_or(u64::MAX),
        paused: s.paused,
    }))
}

/// The outbox backlog and pause flag.
#[utoipa::path(get, path = "/admin/outbox", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem)))]
pub async fn outbox_status(
    State(admin): State<MessagingAdmin>,
) -> Result<Json<OutboxView>, Problem> {
    view(&admin.pool).await
}

/// Stops the relays publishing (durably) until resumed.
#[utoipa::path(post, path = "/admin/outbox/pause", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem)))]
pub async fn pause_outbox(
    State(admin): State<MessagingAdmin>,
) -> Result<Json<OutboxView>, Problem> {
    outbox::pause(&admin.pool).await.map_err(problem)?;
    tracing::warn!(
        service = admin.topology.service(),
        "outbox paused by the administrator"
    );
    view(&admin.pool).await
}

/// Lets the relays publish again; they drain the backlog.
#[utoipa::path(post, path = "/admin/outbox/resume", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem)))]
pub async fn resume_outbox(
    State(admin): State<MessagingAdmin>,
) -> Result<Json<OutboxView>, Problem> {
    outbox::resume(&admin.pool).await.map_err(problem)?;
    tracing::info!(
        service = admin.topology.service(),
        "outbox resumed by the administrator"
    );
    view(&admin.pool).await
}

/// A dead letter as listed ([`dead_letters::DeadLetter`]), for the OpenAPI document.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = DeadLetter)]
pub struct DeadLetterDoc {
    /// Row id, what the replay takes.
    pub id: i64,
    /// The consumer (service) that gave up.
    pub consumer: String,
    /// The message's id.
    pub message_id: Uuid,
    /// Its type.
    pub message_type: String,
    /// Its routing key.
    pub routing_key: String,
    /// The body as text.
    pub body: String,
    /// The last error.
    pub error: String,
    /// Failed attempts before it died.
    pub attempts: i32,
    /// When it died (RFC 3339).
    pub dead_at: String,
    /// When it was last replayed, if ever.
    pub replayed_at: Option<String>,
    /// How often it was replayed.
    pub replay_count: i32,
}

/// The newest dead letters.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = [DeadLetterDoc]), (status = 401, body = Problem)))]
pub async fn list_dead_letters(
    State(admin): State<MessagingAdmin>,
) -> Result<Json<Vec<dead_letters::DeadLetter>>, Problem> {
    Ok(Json(
        dead_letters::list(&admin.pool, DEAD_LETTER_PAGE)
            .await
            .map_err(problem)?,
    ))
}

/// Publishes a dead letter back to the service's queue.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "admin",
    security(("bearer" = [])),
    params(("id" = i64, Path, description = "The dead letter's id")),
    responses((status = 200, body = DeadLetterDoc), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn replay_dead_letter(
    State(admin): State<MessagingAdmin>,
    Path(id): Path<i64>,
) -> Result<Json<dead_letters::DeadLetter>, Problem> {
    let replayed = dead_letters::replay(&admin.pool, &admin.broker, &admin.topology, id)
        .await
        .map_err(problem)?;
    tracing::info!(id, message_id = %replayed.message_id, "dead letter replayed");
    Ok(Json(replayed))
}
