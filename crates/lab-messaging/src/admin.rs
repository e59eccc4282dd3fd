//! The operator's routes over a service's messaging, one piece of code every service mounts:
//! `GET /admin/outbox` (backlog, oldest age, pause flag), `POST /admin/outbox/pause`,
//! `POST /admin/outbox/resume`, `GET /admin/dead-letters` and
//! `POST /admin/dead-letters/{id}/replay`; and the demo's bounded variant ([`demo_router`]):
//! `GET /demo/outbox`, `POST /demo/outbox/pause` (at most [`MAX_DEMO_PAUSE_S`] seconds, lifted
//! by the database clock whatever happens to the caller) and `POST /demo/outbox/resume` (ends
//! only such a pause, never the operator's).
//!
//! Who may call them is the service's decision: it wraps [`router`] in its own admin extractor,
//! e.g. `router(admin).route_layer(from_extractor_with_state::<Admin, _>(state))`, so these
//! routes never answer anyone the service would not.

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use lab_http::{Json, Path, Problem};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Broker, MessagingError, Topology, dead_letters, outbox};

/// How many dead letters the list shows, newest first.
const DEAD_LETTER_PAGE: i64 = 100;
/// The longest pause a demo may ask for: long enough to watch a backlog build, short enough that
/// a forgotten one costs the cluster half a minute of delayed events.
pub const MAX_DEMO_PAUSE_S: u64 = 30;

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

/// The demo's bounded outbox routes, with their state; mount behind a check that lets the demo's
/// caller in (e.g. `lab_auth::RequireAdminOr<Demo>`).
pub fn demo_router<S: Clone + Send + Sync + 'static>(admin: MessagingAdmin) -> Router<S> {
    Router::new()
        .route("/demo/outbox", get(demo_outbox_status))
        .route("/demo/outbox/pause", post(demo_pause_outbox))
        .route("/demo/outbox/resume", post(demo_resume_outbox))
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

/// The outbox backlog and pause flag (the demo's view: the same as the operator's).
#[utoipa::path(get, path = "/demo/outbox", tag = "demo", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn demo_outbox_status(
    State(admin): State<MessagingAdmin>,
) -> Result<Json<OutboxView>, Problem> {
    view(&admin.pool).await
}

/// How long the demo pauses the relays.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DemoPause {
    /// 1 to [`MAX_DEMO_PAUSE_S`] seconds; the relays publish again after it on their own.
    pub for_s: u64,
}

/// Pauses the relays for `for_s` seconds at most; 409 while the operator's pause is in force.
#[utoipa::path(post, path = "/demo/outbox/pause", tag = "demo", security(("bearer" = [])),
    request_body = DemoPause,
    responses((status = 200, body = OutboxView), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn demo_pause_outbox(
    State(admin): State<MessagingAdmin>,
    Json(pause): Json<DemoPause>,
) -> Result<Json<OutboxView>, Problem> {
    if !(1..=MAX_DEMO_PAUSE_S).contains(&pause.for_s) {
        return Err(Problem::invalid_field(
            "for_s",
            format!("1 to {MAX_DEMO_PAUSE_S} seconds"),
        ));
    }
    let span = std::time::Duration::from_secs(pause.for_s);
    if !outbox::pause_for(&admin.pool, span)
        .await
        .map_err(problem)?
    {
        return Err(Problem::typed(
            axum::http::StatusCode::CONFLICT,
            "outbox-paused-by-operator",
            "The operator has paused the outbox",
        )
        .detail("a demo cannot change the operator's pause"));
    }
    tracing::info!(
        service = admin.topology.service(),
        for_s = pause.for_s,
        "outbox paused for a demo"
    );
    view(&admin.pool).await
}

/// Ends the demo's pause early; the operator's pause, if any, stays.
#[utoipa::path(post, path = "/demo/outbox/resume", tag = "demo", security(("bearer" = [])),
    responses((status = 200, body = OutboxView), (status = 401, body = Problem),
        (status = 403, body = Problem)))]
pub async fn demo_resume_outbox(
    State(admin): State<MessagingAdmin>,
) -> Result<Json<OutboxView>, Problem> {
    outbox::resume_timed(&admin.pool).await.map_err(problem)?;
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
