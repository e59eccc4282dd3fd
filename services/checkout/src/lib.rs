//! The checkout service. The place-order saga orchestrator: every transition persisted, compensation on every step.
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run checkout`, the tests run it in-process on port 0.

pub mod saga;

use lab_db::{DbSettings, PgProbe};
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
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            amqp: AmqpSettings::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(info(
    description = "The place-order saga orchestrator: every transition persisted, compensation on every step."
))]
struct ApiDoc;

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let pool = lab_db::connect(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_CHECKOUT__DATABASE__URL",
    )
    .await?;
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    let broker = Broker::start(&settings.amqp, &instance_id, shutdown.clone());
    let readiness = Readiness::new()
        .with(PgProbe(pool.clone()))
        .with(AmqpProbe(broker.clone()));
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics: Metrics::default(),
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let router = app.router(axum::Router::new());
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}
