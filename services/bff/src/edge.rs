//! The edge patterns around the whole `/api` router, in the order a request meets them:
//! [`session`](crate::session) (who is calling), [`rate_limit`](crate::rate_limit) (may they),
//! [`replay`](crate::replay) (have they asked this already).
//!
//! [`Edge::wrap`] takes any router, so the tests put the same stack around a small upstream of
//! their own as the BFF's `build` puts around its routes. It layers each route of the router it
//! is given (axum's `Router::layer`): a fallback added later is not behind it, so proxied paths
//! must be routes (`/api/{*rest}`) merged in before `wrap`. Handlers behind it find the
//! [`Visitor`](crate::session::Visitor) (session, client IP, bearer or not) as an extension.

mod metrics;
mod service;

use axum::Router;
use lab_cache::Redis;
use serde::{Deserialize, Serialize};

use crate::client_ip::{CidrError, TrustedProxies};
use crate::rate_limit::{RateLimitError, RateLimitSettings, RateLimiter};
use crate::replay::ReplayStore;
use crate::session::{SessionError, SessionKey, SessionSettings, SessionState};

pub use metrics::{DecisionLabels, EdgeMetrics, ReplayLabels};
pub use service::{EdgeLayer, EdgeService};

/// The edge's settings (`LAB_BFF__EDGE__…`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeSettings {
    /// Session cookie signing.
    pub session: SessionSettings,
    /// Comma-separated CIDR blocks of the proxies in front of the BFF whose `X-Forwarded-For`
    /// is believed (`10.0.0.0/8,127.0.0.1`); empty trusts none, the socket peer is the client.
    pub trusted_proxies: String,
    /// Token buckets per route class.
    pub rate_limit: RateLimitSettings,
}

/// Why the edge could not be set up; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("LAB_BFF__EDGE__TRUSTED_PROXIES: {0}")]
    TrustedProxies(#[from] CidrError),
    #[error(transparent)]
    RateLimit(#[from] RateLimitError),
}

/// The edge middleware, built once and shared by every request.
#[derive(Clone)]
pub struct Edge {
    /// Cookie key and trusted proxies.
    sessions: SessionState,
    /// The shared token buckets.
    rate_limiter: RateLimiter,
    /// Answers kept for `Idempotency-Key` repeats.
    replay: ReplayStore,
}

impl Edge {
    /// Reads the settings (a random session key when none is set); `redis` holds the shared
    /// rate-limit buckets and the replay store; the edge's metrics go into `registry`.
    pub fn build(
        settings: &EdgeSettings,
        redis: Redis,
        registry: &lab_telemetry::Metrics,
    ) -> Result<Self, EdgeError> {
        settings.rate_limit.validate()?;
        let metrics = EdgeMetrics::register(registry);
        let key = SessionKey::from_settings(&settings.session)?;
        let trusted = TrustedProxies::parse(&settings.trusted_proxies)?;
        Ok(Self {
            sessions: SessionState::new(
                key,
                trusted,
                settings.session.secure_cookie,
                metrics.sessions_issued.clone(),
            ),
            rate_limiter: RateLimiter::new(
                settings.rate_limit.clone(),
                redis.clone(),
                metrics.clone(),
            ),
            replay: ReplayStore::new(redis, metrics),
        })
    }

    /// Who is calling: the session cookie's key and the trusted proxies.
    pub fn sessions(&self) -> &SessionState {
        &self.sessions
    }

    /// The rate limiter: its mode for `/api/health`, its decisions for the push stream.
    pub fn rate_limiter(&self) -> &RateLimiter {
        &self.rate_limiter
    }

    /// The edge's own routes (the rate-limit demo), to merge into `/api` before [`Edge::wrap`].
    pub fn routes(&self) -> Router {
        Router::new()
            .route(
                "/api/demo/rate-limit",
                axum::routing::post(crate::rate_limit::demo::post_rate_limit_demo),
            )
            .with_state(self.rate_limiter.clone())
    }

    /// `routes` behind the edge's idempotency replay alone: the idempotency demo sends its
    /// requests through this, in-process, so the real replay answers them (the demo's own route
    /// is already behind the session and the rate limit of the demo class).
    pub fn replayed(&self, routes: Router) -> Router {
        routes.layer(axum::middleware::from_fn_with_state(
            self.replay.clone(),
            replay_only,
        ))
    }

    /// `routes` behind the edge middleware ([`EdgeService`]).
    pub fn wrap(&self, routes: Router) -> Router {
        routes.layer(self.layer())
    }

    /// The edge middleware as a layer, for a caller that stacks it with others in one
    /// `Router::layer` (axum clones and boxes each layer of a route per request).
    pub fn layer(&self) -> EdgeLayer {
        EdgeLayer(std::sync::Arc::new(self.clone()))
    }
}

/// The replay alone, as a middleware (for [`Edge::replayed`]).
async fn replay_only(
    axum::extract::State(store): axum::extract::State<ReplayStore>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    crate::replay::guard(&store, req, |req| next.run(req)).await
}

#[cfg(test)]
mod tests {
    use crate::Settings;

    #[test]
    fn every_edge_setting_is_read_from_its_environment_variable() {
        let vars = [
            ("LAB_BFF__EDGE__SESSION__KEY", "k".repeat(32)),
            ("LAB_BFF__EDGE__SESSION__SECURE_COOKIE", "true".into()),
            (
                "LAB_BFF__EDGE__TRUSTED_PROXIES",
                "10.0.0.0/8,127.0.0.1".into(),
            ),
            ("LAB_BFF__EDGE__RATE_LIMIT__ORDERS__CAPACITY", "7".into()),
            ("LAB_BFF__EDGE__RATE_LIMIT__DEMO__REFILL_PER_S", "2".into()),
        ]
        .map(|(k, v)| (k.to_owned(), v));

        let settings: Settings =
            lab_config::load_from(crate::NAME, vars).unwrap_or_else(|e| panic!("{e}"));

        let edge = settings.edge;
        assert_eq!(
            edge.session.key.as_ref().map(|k| k.expose().len()),
            Some(32)
        );
        assert!(edge.session.secure_cookie);
        assert_eq!(edge.trusted_proxies, "10.0.0.0/8,127.0.0.1");
        assert_eq!(edge.rate_limit.orders.capacity, 7);
        assert_eq!(edge.rate_limit.demo.refill_per_s, 2.0);
        assert_eq!(edge.rate_limit.default.capacity, 100);
    }
}
