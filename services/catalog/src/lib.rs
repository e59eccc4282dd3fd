//! The catalog service. Products and stock: optimistic concurrency on xmin, oversell-safe reservations, a two-level cache.
//!
//! Where each pattern lives: `occ.rs` (ETag from `xmin`, `If-Match`, one-statement conditional
//! writes), `stock.rs` (reservations that cannot oversell, idempotent per order),
//! `lab_cache::TwoLevel` (L1 + L2 + pub/sub invalidation, wired here), `demo.rs` (the demos),
//! `auth.rs` (administrators: identity's tokens with role `admin`, or the break-glass token).
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run catalog`, the tests run it in-process on port 0.

mod auth;
pub mod demo;
pub mod domain;
pub mod invariants;
pub mod messages;
pub mod occ;
pub mod products;
pub mod routes;
pub mod seed;
pub mod stock;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use lab_auth::{AuthSettings, Verifier};
use lab_cache::{CacheConfig, Redis, RedisProbe, RedisSettings, TwoLevel};
use lab_config::SecretString;
use lab_db::DbSettings;
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_messaging::{AmqpProbe, AmqpSettings, Broker};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// The service's name: its schema, its env prefix (`LAB_CATALOG__`), its instance ids.
pub const NAME: &str = "catalog";

/// This service's migrations, applied to its own schema at start; public so the test harness
/// can build its template database from them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the catalog service reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Its PostgreSQL login; the schema is always `catalog`.
    pub database: DbSettings,
    /// Its Redis; keys are prefixed with the service name.
    pub redis: RedisSettings,
    /// Its RabbitMQ broker.
    pub amqp: AmqpSettings,
    /// How identity's access tokens are checked (`LAB_CATALOG__AUTH__JWKS_URL`, `…__ISSUER`,
    /// `…__AUDIENCE`, …): a token with the `admin` role may create, delete and edit any product.
    pub auth: AuthSettings,
    /// The operator's break-glass token: a bearer token that makes its holder an administrator
    /// without identity (tests, demos, an identity outage). Unset means only tokens with the
    /// `admin` role; keep it out of anything a browser sees.
    pub admin_token: Option<SecretString>,
    /// Base URLs of every catalog replica, this one included, comma-separated: the race and
    /// cache demos spread their requests over them. Empty: this replica alone.
    pub peers: String,
    /// Collapse concurrent cache misses of one key into one database query.
    pub single_flight: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            redis: RedisSettings::default(),
            amqp: AmqpSettings::default(),
            auth: AuthSettings::default(),
            admin_token: None,
            peers: String::new(),
            single_flight: true,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "Products and stock: optimistic concurrency on xmin, oversell-safe reservations, a two-level cache."
    ),
    paths(
        lab_db::admin::credentials_status,
        lab_db::admin::public_status,
        lab_db::admin::rotate_credentials,
        lab_db::admin::set_credentials_ttl,
        routes::list_products,
        routes::get_product,
        routes::create_product,
        routes::update_product,
        routes::delete_product,
        routes::get_inventory,
        routes::update_inventory,
        routes::get_cache_state,
        invariants::get_invariants,
    ),
    components(schemas(
        products::Product,
        products::Inventory,
        routes::CacheState,
        stock::Line,
        stock::ReserveOutcome
    ))
)]
struct ApiDoc;

/// L1 holds every product a replica serves (the catalog is small); 30 s bounds how long a
/// replica can serve a stale product when Redis, and with it invalidation, is down.
const L1_TTL: Duration = Duration::from_secs(30);
/// L2 entries live 5 minutes; invalidation, not expiry, keeps them fresh.
const L2_TTL: Duration = Duration::from_secs(300);

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let db = lab_db::open(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_CATALOG__DATABASE__URL",
        shutdown.clone(),
    )
    .await?;
    let pool = db.pool.clone();
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    lab_messaging::migrate(&pool).await?;
    let seeded = seed::run(&pool).await?;
    if seeded > 0 {
        tracing::info!(seeded, "seed products created");
    }
    let redis = Redis::new(&settings.redis, NAME)?;
    let verifier = Verifier::start(settings.auth.clone(), &settings.redis, shutdown.clone())
        .context(
            "starting the access-token verifier (LAB_CATALOG__AUTH__…, LAB_CATALOG__REDIS__…)",
        )?;
    let broker = Broker::start(&settings.amqp, &instance_id, shutdown.clone());
    let readiness = db
        .probes(Readiness::new())
        .with(RedisProbe {
            redis: redis.clone(),
            critical: false,
        })
        .with(AmqpProbe(broker.clone()));
    let metrics = Metrics::default();
    messages::start(&pool, &broker, &settings.amqp, &metrics, &shutdown);
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics,
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let cache = TwoLevel::new(
        CacheConfig {
            kind: "product",
            l1_capacity: 10_000,
            l1_ttl: L1_TTL,
            l2_ttl: L2_TTL,
        },
        redis,
    );
    cache.spawn_subscriber(shutdown.clone());
    let self_url = Arc::new(OnceLock::new());
    let state = routes::AppState {
        pool,
        cache,
        instance_id: instance_id.clone().into(),
        settings: Arc::new(settings.clone()),
        // Demo fan-out to the replicas stays on loopback; a slow connect is a dead replica.
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(500))
            .build()?,
        self_url: self_url.clone(),
        admin: lab_auth::AdminGate::new(
            settings.admin_token.as_ref().map(|t| t.expose()),
            Some(verifier.clone()),
        ),
        verifier,
    };
    // The shared credential routes answer administrators only (lab_auth::admin).
    let credentials_admin = lab_db::admin::router(db.credentials.clone()).route_layer(
        axum::middleware::from_extractor_with_state::<lab_auth::RequireAdmin, routes::AppState>(
            state.clone(),
        ),
    );
    let (router, fast) = app.router_with_fast_path(
        routes::router(state.clone())
            .merge(credentials_admin)
            .merge(lab_db::admin::public_router(db.credentials.clone())),
        routes::fast_product_reads(state),
    );
    let application = Application::bind(&settings.http, instance_id, router, shutdown)
        .await?
        .with_fast_path(fast);
    let _ = self_url.set(application.base_url());
    Ok(application)
}
