//! The BFF's narrow service token: identity's client-credentials token with the `demo` scope and
//! no roles, which the BFF presents on the calls an anonymous visitor's demo makes that need
//! authorization (a timed outbox pause, a capped credential rotation) — never a god token, and
//! never relayed to the browser.
//!
//! One token serves every demo: it is cached, fetched again [`REFRESH_BEFORE`] its expiry, and a
//! burst of demos needing a fresh one makes one request to identity (single-flight: the first
//! fetches under a lock, the rest wait on it and then find the new token).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use lab_config::SecretString;
use lab_http::Problem;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Fetch a new token this long before the cached one expires, so a demo that takes up to a
/// minute (the longest a demo may run) never presents a token that lapses mid-run.
const REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// A token shorter-lived than this is still used, once: identity's lifetime is minutes, so this
/// only guards against a misconfigured one, which would otherwise be fetched on every call.
const MIN_REUSE: Duration = Duration::from_secs(5);

/// The BFF as identity's client (`LAB_BFF__CLIENT__ID`, `LAB_BFF__CLIENT__SECRET`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ClientSettings {
    /// The client id identity knows the BFF by.
    pub id: String,
    /// Its secret, the same as identity's `LAB_IDENTITY__CLIENT__SECRET`; empty turns the demos
    /// that need the token off (503).
    pub secret: SecretString,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            id: "bff".into(),
            secret: SecretString::default(),
        }
    }
}

/// A token and when to stop using it.
struct Cached {
    /// The bearer token.
    token: Arc<str>,
    /// When to fetch a new one.
    refresh_at: Instant,
}

/// The cached client token, shared by every handler.
#[derive(Clone)]
pub struct ServiceToken {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// Identity's base URL, when one is configured.
    identity: Option<String>,
    settings: ClientSettings,
    /// The current token: read on every demo call without waiting.
    cached: ArcSwapOption<Cached>,
    /// Held by the one caller fetching a new token; the others wait on it (single-flight). A
    /// tokio mutex because waiting on the fetch is the point.
    refreshing: tokio::sync::Mutex<()>,
    /// Fetches made, for tests and the demo's evidence.
    fetches: std::sync::atomic::AtomicU64,
}

/// What identity answers.
#[derive(Deserialize)]
struct ClientToken {
    access_token: String,
    expires_in: i64,
}

impl ServiceToken {
    pub fn new(http: reqwest::Client, identity: Option<String>, settings: ClientSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                identity,
                settings,
                cached: ArcSwapOption::empty(),
                refreshing: tokio::sync::Mutex::new(()),
                fetches: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// How many times a token was fetched from identity.
    pub fn fetches(&self) -> u64 {
        self.inner
            .fetches
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn fresh(&self) -> Option<Arc<str>> {
        self.inner
            .cached
            .load()
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| Arc::clone(&c.token))
    }

    /// A valid token: the cached one, or a new one from identity. 503 when the BFF has no client
    /// secret or no identity, 502 when identity refuses or fails.
    pub async fn get(&self) -> Result<Arc<str>, Problem> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _turn = self.inner.refreshing.lock().await;
        // Whoever held the lock before us may have fetched it already.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let (token, lifetime) = self.fetch().await?;
        let reuse = lifetime.saturating_sub(REFRESH_BEFORE).max(MIN_REUSE);
        self.inner.cached.store(Some(Arc::new(Cached {
            token: Arc::clone(&token),
            refresh_at: Instant::now() + reuse,
        })));
        Ok(token)
    }

    async fn fetch(&self) -> Result<(Arc<str>, Duration), Problem> {
        let inner = &self.inner;
        let secret = inner.settings.secret.expose();
        let Some(identity) = inner.identity.as_deref().filter(|_| !secret.is_empty()) else {
            return Err(Problem::unavailable(
                "identity",
                "the BFF has no client token: identity or LAB_BFF__CLIENT__SECRET is not configured",
            ));
        };
        inner
            .fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let failed = |e: String| {
            crate::demo::upstream_failed("identity", "getting the BFF's client token", e)
        };
        let response = inner
            .http
            .post(format!("{identity}/token/client"))
            .json(&serde_json::json!({ "client_id": inner.settings.id, "client_secret": secret }))
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(status.to_string()));
        }
        let body: ClientToken = response.json().await.map_err(|e| failed(e.to_string()))?;
        let lifetime = Duration::from_secs(u64::try_from(body.expires_in).unwrap_or(0));
        Ok((body.access_token.into(), lifetime))
    }
}
