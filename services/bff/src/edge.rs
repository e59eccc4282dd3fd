//! The edge patterns around the whole `/api` router, in the order a request meets them:
//! [`session`](crate::session) (who is calling), [`rate_limit`](crate::rate_limit) (may they),
//! [`replay`](crate::replay) (have they asked this already).
//!
//! [`Edge::wrap`] takes any router, so the tests put the same stack around a small upstream of
//! their own as the BFF's `build` puts around its routes.

use axum::Router;
use lab_cache::Redis;
use serde::{Deserialize, Serialize};

use crate::client_ip::{CidrError, TrustedProxies};
use crate::session::{SessionError, SessionKey, SessionSettings, SessionState};

/// The edge's settings (`LAB_BFF__EDGE__…`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct EdgeSettings {
    /// Session cookie signing.
    pub session: SessionSettings,
    /// Comma-separated CIDR blocks of the proxies in front of the BFF whose `X-Forwarded-For`
    /// is believed (`10.0.0.0/8,127.0.0.1`); empty trusts none, the socket peer is the client.
    pub trusted_proxies: String,
}

/// Why the edge could not be set up; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("LAB_BFF__EDGE__TRUSTED_PROXIES: {0}")]
    TrustedProxies(#[from] CidrError),
}

/// The edge middleware, built once and shared by every request.
#[derive(Clone)]
pub struct Edge {
    /// Cookie key and trusted proxies.
    sessions: SessionState,
}

impl Edge {
    /// Reads the settings (a random session key when none is set); `redis` holds the shared
    /// rate-limit buckets and the replay store.
    pub fn build(settings: &EdgeSettings, redis: Redis) -> Result<Self, EdgeError> {
        let _ = redis;
        let key = SessionKey::from_settings(&settings.session)?;
        let trusted = TrustedProxies::parse(&settings.trusted_proxies)?;
        Ok(Self {
            sessions: SessionState::new(key, trusted, settings.session.secure_cookie),
        })
    }

    /// `routes` behind the edge middleware.
    pub fn wrap(&self, routes: Router) -> Router {
        routes.layer(axum::middleware::from_fn_with_state(
            self.sessions.clone(),
            crate::session::sessions,
        ))
    }
}
