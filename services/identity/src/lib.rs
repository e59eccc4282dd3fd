//! The identity service. Users, passwords, JWT issuance with JWKS, refresh-token rotation and JTI revocation.
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run identity`, the tests run it in-process on port 0.

use lab_cache::{Redis, RedisProbe, RedisSettings};
use lab_db::{DbSettings, PgProbe};
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// The service's name: its schema, its env prefix (`LAB_IDENTITY__`), its instance ids.
pub const NAME: &str = "identity";

/// This service's migrations, applied to its own schema at start; public so the test harness
/// can build its template database from them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the identity service reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Its PostgreSQL login; the schema is always `identity`.
    pub database: DbSettings,
    /// Its Redis; keys are prefixed with the service name.
    pub redis: RedisSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            redis: RedisSettings::default(),
        }
    }
}

#[derive(OpenApi)]
#[openapi(info(
    description = "Users, passwords, JWT issuance with JWKS, refresh-token rotation and JTI revocation."
))]
struct ApiDoc;

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let pool = lab_db::connect(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_IDENTITY__DATABASE__URL",
    )
    .await?;
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    let redis = Redis::new(&settings.redis, NAME)?;
    let readiness = Readiness::new()
        .with(PgProbe(pool.clone()))
        .with(RedisProbe {
            redis: redis.clone(),
            critical: false,
        });
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
