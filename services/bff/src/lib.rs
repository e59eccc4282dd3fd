//! The BFF: the only public listener of the cluster.
//!
//! Today it answers `GET /api/health`, the health of every service instance and every piece of
//! infrastructure as the services themselves see it; proxying and the edge patterns build on the
//! same upstream list.

pub mod chaos;
pub mod demo;
mod health;
pub mod live;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use lab_cache::{Redis, RedisProbe, RedisSettings};
use lab_http::{Application, HttpSettings, Readiness, ServiceApp, new_instance_id};
use lab_messaging::{AmqpSettings, Broker};
use lab_telemetry::Metrics;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use health::{ClusterHealth, DependencyHealth, InstanceHealth};

/// The service's name: its env prefix (`LAB_BFF__`) and its instance ids.
pub const NAME: &str = "bff";

/// Everything the BFF reads at start-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Where and how this process serves HTTP; the public listener.
    pub http: HttpSettings,
    /// Its Redis (rate-limit buckets, replay store, push backplane).
    pub redis: RedisSettings,
    /// Base URLs of every instance of every service, by service name, comma-separated
    /// (`LAB_BFF__UPSTREAMS__CATALOG=http://127.0.0.1:7102,http://127.0.0.1:7103`).
    pub upstreams: BTreeMap<String, String>,
    /// OpenBao's address, probed for `/api/health` when set.
    pub vault_addr: Option<String>,
    /// Its RabbitMQ, tapped for the live message-flow and saga events.
    pub amqp: AmqpSettings,
    /// The live push stream.
    pub live: live::LiveSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let local = |port: u16| format!("http://127.0.0.1:{port}");
        Self {
            http: HttpSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                ..HttpSettings::default()
            },
            redis: RedisSettings::default(),
            upstreams: [
                ("identity", local(7101)),
                ("catalog", format!("{},{}", local(7102), local(7103))),
                ("orders", local(7104)),
                ("payments", local(7105)),
                ("checkout", local(7106)),
                ("psp", local(7107)),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            vault_addr: None,
            amqp: AmqpSettings::default(),
            live: live::LiveSettings::default(),
        }
    }
}

impl Settings {
    /// `(service, base url)` for every configured instance, in a stable order.
    pub fn instances(&self) -> Vec<(String, String)> {
        self.upstreams
            .iter()
            .flat_map(|(service, urls)| {
                urls.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(move |u| (service.clone(), u.trim_end_matches('/').to_owned()))
            })
            .collect()
    }
}

/// What every BFF handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// This process's `X-Instance-Id`.
    pub instance_id: String,
    pub settings: Arc<Settings>,
    pub http: reqwest::Client,
    pub redis: Redis,
    /// The live push backplane (`GET /api/events`).
    pub live: live::Backplane,
}

#[derive(OpenApi)]
#[openapi(
    info(
        description = "The gateway: cluster health, proxying to the services, the edge patterns and the pages."
    ),
    paths(
        health::get_health,
        live::sse::get_events,
        demo::saga::run_saga,
        chaos::invariants::get_invariants
    ),
    components(schemas(
        ClusterHealth,
        InstanceHealth,
        DependencyHealth,
        live::BackplaneStatus,
        demo::DemoReport,
        demo::Step,
        demo::saga::SagaDemo
    ))
)]
struct ApiDoc;

/// Connects what the BFF needs and binds its listener.
pub async fn build(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<Application> {
    let instance_id = new_instance_id(NAME, settings.http.replica);
    let redis = Redis::new(&settings.redis, NAME)?;
    let http = reqwest::Client::builder()
        // Health probes and proxied calls stay on loopback; a connect that takes longer than
        // this is a dead upstream, not a slow one.
        .connect_timeout(std::time::Duration::from_millis(500))
        .build()?;
    // Background work (the live stream's reader, writer, leadership, probes and bus tap) stops
    // with the shutdown token.
    let tracker = tokio_util::task::TaskTracker::new();
    let live_redis = Redis::new(&settings.redis, "live")?;
    let backplane = live::Backplane::start(live_redis.clone(), &shutdown, &tracker);
    let leadership =
        live::Leadership::start(live_redis, instance_id.clone(), shutdown.clone(), &tracker);
    let state = AppState {
        instance_id: instance_id.clone(),
        settings: Arc::new(settings.clone()),
        http,
        redis: redis.clone(),
        live: backplane.clone(),
    };
    tracker.spawn(health::push_loop(
        state.clone(),
        leadership.clone(),
        shutdown.clone(),
    ));
    if settings.live.tap {
        let broker = Broker::start(&settings.amqp, NAME, shutdown.clone());
        tracker.spawn(live::tap::run(
            broker,
            settings.amqp.clone(),
            instance_id.clone(),
            backplane,
            leadership,
            shutdown.clone(),
        ));
    }
    tracker.close();
    let readiness = Readiness::new().with(RedisProbe {
        redis,
        critical: false,
    });
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics: Metrics::default(),
        readiness,
        openapi: ApiDoc::openapi(),
    };
    let routes = axum::Router::new()
        .route("/api/health", axum::routing::get(health::get_health))
        .route("/api/events", axum::routing::get(live::sse::get_events))
        .route("/api/demo/saga", axum::routing::post(demo::saga::run_saga))
        .route(
            "/api/chaos/invariants",
            axum::routing::get(chaos::invariants::get_invariants),
        )
        .with_state(state);
    let router = app.router(routes);
    Ok(Application::bind(&settings.http, instance_id, router, shutdown).await?)
}
