//! The checkout service. The place-order saga orchestrator: every transition persisted, compensation on every step.
//!
//! Where things live: `saga.rs` (the whole machine, pure and property-tested),
//! `orchestrator.rs` (one step of it in one transaction: lock and decide, then one statement that
//! persists, records, re-arms the deadline and writes the outbox), `commands.rs` (its commands as lab-contracts messages), `messages.rs` (events in, commands out), `deadlines.rs` (the deadline poller),
//! `routes.rs` + `queries.rs` (the saga views).
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run checkout`, the tests run it in-process on port 0.

pub mod commands;
pub mod deadlines;
pub mod invariants;
pub mod messages;
pub mod metrics;
pub mod orchestrator;
pub mod queries;
pub mod routes;
pub mod saga;

use std::time::Duration;

use lab_config::SecretString;
use lab_db::DbSettings;
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_messaging::{AmqpProbe, AmqpSettings, Broker};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// The service's name: its schema, its env prefix (`LAB_CHECKOUT__`), its instance ids.
pub const NAME: &str = "checkout";

/// This service's migrations, applied to its own schema at start; public so the test harness
/// can build its template database from them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the checkout service reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Its PostgreSQL login; the schema is always `checkout`.
    pub database: DbSettings,
    /// Its RabbitMQ broker.
    pub amqp: AmqpSettings,
    /// Bearer token of the administrator (the saga list); unset means nobody is one.
    pub admin_token: Option<SecretString>,
    /// How long the saga waits in each state before it compensates.
    pub timeouts: TimeoutSettings,
    /// How often the deadline poller looks for due deadlines, in milliseconds.
    pub deadline_poll_ms: u64,
}

/// The saga's deadlines in milliseconds (env: `LAB_CHECKOUT__TIMEOUTS__PAYMENT_MS=5000`); the
/// defaults are [`saga::Timeouts::default`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(default)]
pub struct TimeoutSettings {
    /// Waiting for catalog to reserve the stock.
    pub reserve_ms: u64,
    /// Waiting for payments to open a session.
    pub session_ms: u64,
    /// The customer's time to pay (and the PSP session's lifetime): 15 min by default, down to
    /// seconds for demos and tests.
    pub payment_ms: u64,
    /// Waiting for the capture.
    pub capture_ms: u64,
    /// Waiting for catalog to commit the stock (each retry waits this long again).
    pub commit_ms: u64,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        let t = saga::Timeouts::default();
        Self {
            reserve_ms: millis(t.reserve),
            session_ms: millis(t.session),
            payment_ms: millis(t.payment),
            capture_ms: millis(t.capture),
            commit_ms: millis(t.commit),
        }
    }
}

impl From<TimeoutSettings> for saga::Timeouts {
    fn from(t: TimeoutSettings) -> Self {
        Self {
            reserve: Duration::from_millis(t.reserve_ms),
            session: Duration::from_millis(t.session_ms),
            payment: Duration::from_millis(t.payment_ms),
            capture: Duration::from_millis(t.capture_ms),
            commit: Duration::from_millis(t.commit_ms),
        }
    }
}

/// A due deadline fires within this of its time: frequent enough for second-scale demo
/// timeouts, and one cheap indexed query per tick when nothing is due.
const DEFAULT_DEADLINE_POLL_MS: u64 = 250;

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            amqp: AmqpSettings::default(),
            admin_token: None,
            timeouts: TimeoutSettings::default(),
            deadline_poll_ms: DEFAULT_DEADLINE_POLL_MS,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "The place-order saga orchestrator: every transition persisted, compensation on every step."
    ),
    paths(
        routes::get_saga,
        routes::list_sagas,
        invariants::get_invariants,
        lab_db::admin::credentials_status,
        lab_db::admin::public_status,
        lab_db::admin::rotate_credentials,
        lab_db::admin::set_credentials_ttl,
    ),
    components(schemas(
        queries::SagaView,
        queries::SagaSummary,
        queries::Deadline,
        queries::Transition
    ))
)]
struct ApiDoc;

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let db = lab_db::open(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_CHECKOUT__DATABASE__URL",
        shutdown.clone(),
    )
    .await?;
    let pool = db.pool.clone();
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    lab_messaging::migrate(&pool).await?;
    let broker = Broker::start(&settings.amqp, &instance_id, shutdown.clone());
    let readiness = db.probes(Readiness::new()).with(AmqpProbe(broker.clone()));
    let metrics = Metrics::default();
    let timeouts = saga::Timeouts::from(settings.timeouts);
    let saga_metrics = crate::metrics::SagaMetrics::register(&metrics);
    messages::start(
        &pool,
        &broker,
        &settings.amqp,
        &metrics,
        saga_metrics.clone(),
        timeouts,
        &shutdown,
    );
    // Its task is tracked by the poller and stops with `shutdown`.
    let _poller = deadlines::Poller::start(
        pool.clone(),
        timeouts,
        saga_metrics,
        Duration::from_millis(settings.deadline_poll_ms.max(1)),
        &shutdown,
    );
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics,
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let state = routes::AppState {
        pool,
        admin: lab_auth::AdminGate::new(settings.admin_token.as_ref().map(|t| t.expose()), None),
        timeouts,
    };
    // The shared credential routes answer administrators only.
    let credentials_admin = lab_db::admin::router(db.credentials.clone()).route_layer(
        axum::middleware::from_extractor_with_state::<lab_auth::RequireAdmin, routes::AppState>(
            state.clone(),
        ),
    );
    let router = app.router(
        routes::router(state)
            .merge(credentials_admin)
            .merge(lab_db::admin::public_router(db.credentials.clone())),
    );
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}
