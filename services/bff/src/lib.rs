//! The BFF: the only public listener of the cluster.
//!
//! It answers `GET /api/health` (the health of every service instance and every piece of
//! infrastructure as the services themselves see it) and proxies the public surface the services
//! answer ([`proxy`]) to the same upstream list. [`build`] assembles the routes, then the edge
//! layers around them.

pub mod chaos;
pub mod demo;
mod health;
pub mod journeys;
pub mod live;
pub mod pages;
// ---- edge (branch bff-edge): sessions, client IP, rate limit, idempotency replay ----
pub mod client_ip;
pub mod edge;
pub mod rate_limit;
pub mod replay;
pub mod session;
// ---- end edge ----
pub mod proxy;
mod security;
pub mod service_token;

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
pub use proxy::{Proxy, ProxySettings};
pub use security::SecuritySettings;

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
    /// Background journeys.
    pub journeys: journeys::JourneySettings,
    /// Sessions, client IP, rate limits and idempotency replay (branch bff-edge).
    pub edge: edge::EdgeSettings,
    /// Timeouts, retries, breakers and body limits of the proxied routes.
    pub proxy: ProxySettings,
    /// CORS origins and whether the BFF is behind TLS (HSTS).
    pub security: SecuritySettings,
    /// Where the apphost's chaos API is, for TCP and process faults.
    pub chaos: chaos::relay::ChaosSettings,
    /// How the chaos API checks a bearer token's admin role (identity's key set).
    pub auth: lab_auth::AuthSettings,
    /// The BFF as identity's client, for its narrow `demo` token.
    pub client: service_token::ClientSettings,
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
            journeys: journeys::JourneySettings::default(),
            edge: edge::EdgeSettings::default(),
            proxy: ProxySettings::default(),
            security: SecuritySettings::default(),
            chaos: chaos::relay::ChaosSettings::default(),
            auth: lab_auth::AuthSettings::default(),
            client: service_token::ClientSettings::default(),
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
    /// The edge middleware's shared parts (the rate limiter's mode for `/api/health`).
    pub edge: edge::Edge,
    /// The proxy: its breakers and faults, for the circuit-breaker demo.
    pub proxy: Proxy,
    /// Checks bearer tokens for the admin role on the chaos API; `None` when no key set is
    /// configured (every caller is then a visitor).
    pub verifier: Option<lab_auth::Verifier>,
    /// The narrow `demo`-scoped client token, for demo calls that need authorization.
    pub service_token: service_token::ServiceToken,
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
        demo::breaker::run_breaker,
        demo::revocation::run_revocation,
        demo::idempotency::run_idempotency,
        demo::outbox::run_outbox,
        demo::vault::run_vault_rotation,
        rate_limit::demo::post_rate_limit_demo,
        chaos::invariants::get_invariants,
        chaos::faults::get_chaos,
        chaos::faults::post_fault,
        chaos::faults::delete_fault
    ),
    components(schemas(
        chaos::faults::FaultRecord,
        chaos::faults::NewFault,
        chaos::faults::Layer,
        chaos::faults::ChaosState,
        chaos::faults::Limits,
        lab_resilience::HttpFault,
        ClusterHealth,
        InstanceHealth,
        DependencyHealth,
        live::BackplaneStatus,
        demo::DemoReport,
        demo::Step,
        demo::saga::SagaDemo,
        demo::breaker::BreakerDemo,
        demo::idempotency::IdempotencyDemo,
        demo::outbox::OutboxDemo,
        demo::vault::VaultRotationDemo,
        // edge (branch bff-edge)
        rate_limit::RateLimitHealth,
        rate_limit::demo::RateLimitDemo,
        rate_limit::demo::RateLimitDemoReport,
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
    // ---- edge (branch bff-edge) ----
    let metrics = Metrics::default();
    let edge = edge::Edge::build(&settings.edge, redis.clone(), &metrics)?;
    // ---- end edge ----
    let proxy = Proxy::new(&settings.instances(), &settings.proxy);
    // Without identity (`lab up --no-vault`) the key-set URL is empty: nobody is admin.
    let verifier = if settings.auth.jwks_url.is_empty() {
        None
    } else {
        Some(lab_auth::Verifier::start(
            settings.auth.clone(),
            &settings.redis,
            shutdown.clone(),
        )?)
    };
    let identity = settings
        .instances()
        .into_iter()
        .find(|(service, _)| service == "identity")
        .map(|(_, url)| url);
    let service_token =
        service_token::ServiceToken::new(http.clone(), identity, settings.client.clone());
    let state = AppState {
        instance_id: instance_id.clone(),
        settings: Arc::new(settings.clone()),
        http,
        redis: redis.clone(),
        live: backplane.clone(),
        edge: edge.clone(),
        proxy: proxy.clone(),
        verifier,
        service_token,
    };
    tracker.spawn(chaos::relay::watch(
        state.clone(),
        leadership.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(health::push_loop(
        state.clone(),
        leadership.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(chaos::faults::reconcile(state.clone(), shutdown.clone()));
    tracker.spawn(live::credentials::run(
        state.clone(),
        leadership.clone(),
        shutdown.clone(),
    ));
    if settings.journeys.enabled {
        tracker.spawn(journeys::run(
            state.clone(),
            leadership.clone(),
            shutdown.clone(),
        ));
    }
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
    let traffic = Arc::new(live::bridge::Traffic::default());
    tracker.spawn(live::bridge::run(
        instance_id.clone(),
        state.live.clone(),
        proxy.clone(),
        edge.rate_limiter().clone(),
        Arc::clone(&traffic),
        shutdown.clone(),
    ));
    tracker.close();
    let readiness = Readiness::new().with(RedisProbe {
        redis,
        critical: false,
    });
    let app = ServiceApp {
        name: NAME,
        instance_id: instance_id.clone().into(),
        metrics: metrics.clone(),
        readiness,
        openapi: ApiDoc::openapi(),
    };
    // Sessions, rate limit and replay around every /api route, inside the platform middleware so
    // they see the request id and are counted.
    // The traffic count outside the edge, so the metrics snapshot counts the 429s it answers
    // too; both in one `layer` call, which axum turns into one level of each route rather than
    // two, each cloned and boxed per request (callgrind, `lab bench bff`, session 6).
    let routes = routes(state, &proxy).merge(edge.routes()).layer((
        live::bridge::TrafficLayer(Arc::clone(&traffic)),
        edge.layer(),
    ));
    // The pages (`/`, `/assets/…`) sit outside the `/api` edge: no session or rate limit for
    // static bytes; the page's first API call gets the visitor a session.
    let (router, observer) = app.router_with_observer(routes.merge(pages::router()));
    let router = browser_edge(router, &settings);
    let application = Application::bind(&settings.http, instance_id, router, shutdown).await?;
    // Proxied reads through the BFF's own HTTP/1 front, unless cross-origin callers are
    // allowed: their answers need the CORS layer, which only the router has.
    if settings.proxy.own_front && !settings.security.cross_origin() {
        let front = proxy::Front::new(
            &proxy,
            &edge,
            traffic,
            &observer,
            &metrics,
            settings.security.behind_tls,
        );
        return Ok(application.with_front(Arc::new(front)));
    }
    Ok(application)
}

/// The BFF's own routes and the proxied ones. Layers that should see the request id and be
/// counted in the metrics (session, rate limit, idempotency replay) belong here, on this router,
/// before the platform middleware wraps it.
fn routes(state: AppState, proxy: &Proxy) -> axum::Router {
    axum::Router::new()
        .route("/api/health", axum::routing::get(health::get_health))
        .route("/api/events", axum::routing::get(live::sse::get_events))
        .route("/api/demo/saga", axum::routing::post(demo::saga::run_saga))
        .route(
            "/api/demo/circuit-breaker",
            axum::routing::post(demo::breaker::run_breaker),
        )
        .route(
            "/api/demo/jti-revocation",
            axum::routing::post(demo::revocation::run_revocation),
        )
        .route(
            "/api/demo/idempotency",
            axum::routing::post(demo::idempotency::run_idempotency),
        )
        .route(
            "/api/demo/outbox",
            axum::routing::post(demo::outbox::run_outbox),
        )
        .route(
            "/api/demo/vault-rotation",
            axum::routing::post(demo::vault::run_vault_rotation),
        )
        .route("/api/chaos", axum::routing::get(chaos::faults::get_chaos))
        .route(
            "/api/chaos/faults",
            axum::routing::post(chaos::faults::post_fault),
        )
        .route(
            "/api/chaos/faults/{id}",
            axum::routing::delete(chaos::faults::delete_fault),
        )
        .route(
            "/api/chaos/invariants",
            axum::routing::get(chaos::invariants::get_invariants),
        )
        .with_state(state)
        .merge(proxy.router())
}

/// The browser edge around everything, the platform routes included (CORS, security headers);
/// the last layer added runs first.
fn browser_edge(router: axum::Router, settings: &Settings) -> axum::Router {
    security::layer(router, &settings.security)
}
