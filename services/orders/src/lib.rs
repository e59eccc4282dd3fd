//! The orders service. Idempotent claims and order placement; follows each order to its final state.
//!
//! Where each pattern lives: `claims.rs` (idempotency via `INSERT … ON CONFLICT … RETURNING
//! claim_id, (xmax = 0)`), `orders.rs` (claim, order and outbox event in one transaction),
//! `prices.rs` (price snapshots from catalog: round-robin, timeouts, jittered retries),
//! `messages.rs` (following the checkout saga to the order's final state), `auth.rs` (the
//! customer: a signed-in user from identity's token, else the visitor's session).
//!
//! A library with a thin entry point: [`build`] wires settings to a bound [`Application`]; the
//! `lab` binary runs it as `lab run orders`, the tests run it in-process on port 0.

mod auth;
pub mod claims;
pub mod domain;
pub mod invariants;
pub mod messages;
pub mod metrics;
pub mod orders;
pub mod prices;
pub mod routes;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use lab_auth::{AuthSettings, Verifier};
use lab_cache::RedisSettings;
use lab_db::DbSettings;
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_messaging::{AmqpProbe, AmqpSettings, Broker, Topology};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

/// The service's name: its schema, its env prefix (`LAB_ORDERS__`), its instance ids.
pub const NAME: &str = "orders";

/// This service's migrations, applied to its own schema at start; public so the test harness
/// can build its template database from them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the orders service reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP.
    pub http: HttpSettings,
    /// Its PostgreSQL login; the schema is always `orders`.
    pub database: DbSettings,
    /// Its RabbitMQ broker.
    pub amqp: AmqpSettings,
    /// Its Redis: only to follow identity's revoked tokens (`auth:` keys and channel).
    pub redis: RedisSettings,
    /// How identity's access tokens are checked (`LAB_ORDERS__AUTH__JWKS_URL`, `…__ISSUER`,
    /// `…__AUDIENCE`, …): a signed-in user is the customer `user:<sub>`.
    pub auth: AuthSettings,
    /// Base URLs of every catalog replica, comma-separated; prices are read round-robin.
    pub catalog_urls: String,
    /// Bound on one price request to catalog, connect included.
    pub catalog_attempt_timeout_ms: u64,
    /// Attempts per price (first one included) on connect errors, timeouts and 5xx.
    pub catalog_attempts: u32,
    /// How long a customer's Idempotency-Key keeps answering with the same order (5–86,400 s).
    pub order_claim_ttl_s: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::default(),
            database: DbSettings::local(NAME),
            amqp: AmqpSettings::default(),
            redis: RedisSettings::default(),
            auth: AuthSettings::default(),
            // The BFF's local defaults for catalog's two replicas. `lab up` picks its own ports,
            // so it must pass LAB_ORDERS__CATALOG_URLS (as it passes the BFF its upstreams).
            catalog_urls: "http://127.0.0.1:7102,http://127.0.0.1:7103".into(),
            // Catalog answers a cached product in about a millisecond; a second means a stuck
            // replica, and the next attempt goes to another one.
            catalog_attempt_timeout_ms: 1_000,
            // Two retries ride out one dead replica and a blip without holding a checkout for
            // more than a few seconds.
            catalog_attempts: 3,
            // A day, as long as the edge keeps idempotent responses (ARCHITECTURE.md §6).
            order_claim_ttl_s: 86_400,
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "Idempotent claims and order placement; follows each order to its final state."
    ),
    paths(
        lab_db::admin::credentials_status,
        lab_db::admin::public_status,
        lab_db::admin::rotate_credentials,
        lab_db::admin::set_credentials_ttl,
        lab_db::admin::demo_rotate_credentials,
        lab_messaging::admin::outbox_status,
        lab_messaging::admin::pause_outbox,
        lab_messaging::admin::resume_outbox,
        lab_messaging::admin::list_dead_letters,
        lab_messaging::admin::replay_dead_letter,
        lab_messaging::admin::demo_outbox_status,
        lab_messaging::admin::demo_pause_outbox,
        lab_messaging::admin::demo_resume_outbox,
        claims::create_claim,
        claims::get_claim,
        routes::place_order,
        routes::get_order,
        invariants::get_invariants,
    ),
    components(schemas(domain::OrderStatus, orders::LineView, orders::Transition))
)]
struct ApiDoc;

/// Connects what the service needs, applies its migrations, and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let db = lab_db::open(
        &settings.database,
        NAME,
        &instance_id,
        "LAB_ORDERS__DATABASE__URL",
        shutdown.clone(),
    )
    .await?;
    let pool = db.pool.clone();
    lab_db::migrate(&pool, &MIGRATOR, NAME).await?;
    lab_messaging::migrate(&pool).await?;
    domain::Ttl::parse(settings.order_claim_ttl_s)
        .context("LAB_ORDERS__ORDER_CLAIM_TTL_S is not valid")?;
    let http = reqwest::Client::builder()
        // Catalog is on loopback or in-cluster: a connect slower than this is a dead replica.
        .connect_timeout(Duration::from_millis(500))
        .build()
        .context("building the catalog HTTP client")?;
    let catalog = prices::Catalog::new(
        http,
        &settings.catalog_urls,
        Duration::from_millis(settings.catalog_attempt_timeout_ms),
        settings.catalog_attempts,
    )
    .context("LAB_ORDERS__CATALOG_URLS names no catalog")?;
    let verifier = Verifier::start(settings.auth.clone(), &settings.redis, shutdown.clone())
        .context(
            "starting the access-token verifier (LAB_ORDERS__AUTH__…, LAB_ORDERS__REDIS__…)",
        )?;
    let broker = Broker::start(&settings.amqp, &instance_id, shutdown.clone());
    let readiness = db.probes(Readiness::new()).with(AmqpProbe(broker.clone()));
    let metrics = Metrics::default();
    messages::start(&pool, &broker, &settings.amqp, &metrics, &shutdown);
    let orders_metrics = metrics::OrdersMetrics::register(&metrics);
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics,
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let state = routes::AppState {
        pool,
        catalog,
        metrics: orders_metrics,
        settings: Arc::new(settings.clone()),
        verifier,
    };
    let messaging = lab_messaging::admin::MessagingAdmin {
        pool: state.pool.clone(),
        broker: broker.clone(),
        topology: Topology::new(&settings.amqp, NAME),
    };
    // The shared credential and messaging routes answer administrators only…
    let admin = lab_db::admin::router(db.credentials.clone())
        .merge(lab_messaging::admin::router(messaging.clone()))
        .route_layer(axum::middleware::from_extractor_with_state::<
            lab_auth::RequireAdmin,
            routes::AppState,
        >(state.clone()));
    // …and their bounded demo variants (a timed outbox pause, a rate-capped rotation) also the
    // BFF's `demo`-scoped client token, for the outbox and vault-rotation demos.
    let demo = lab_db::admin::demo_router(db.credentials.clone())
        .merge(lab_messaging::admin::demo_router(messaging))
        .route_layer(axum::middleware::from_extractor_with_state::<
            lab_auth::RequireAdminOr<lab_auth::Demo>,
            routes::AppState,
        >(state.clone()));
    let router = app.router(
        routes::router(state)
            .merge(admin)
            .merge(demo)
            .merge(lab_db::admin::public_router(db.credentials.clone())),
    );
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}
