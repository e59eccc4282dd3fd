//! Redis for Lab services.
//!
//! [`Redis`] holds a `ConnectionManager` that connects lazily and reconnects by itself, so a
//! service starts while Redis is down and recovers when it returns, without a restart. Every key a
//! service writes goes through [`Redis::key`], which applies the owner prefix (`catalog:`) and, in
//! tests, the test's own prefix.

mod two_level;

use std::time::Duration;

use futures::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};

pub use redis;
pub use two_level::{CacheConfig, CacheStats, Source, TwoLevel, Versioned};

/// How a service reaches Redis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Prepended to every key and channel; tests set a unique one each.
    pub prefix: String,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: String::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("the Redis URL is not valid: {0}")]
    BadUrl(String),
}

/// A shared, self-healing Redis connection for one service.
#[derive(Clone)]
pub struct Redis {
    /// Multiplexed; clones share one socket. Reconnects on its own after a failure.
    manager: ConnectionManager,
    /// The client, for dedicated connections (pub/sub) that cannot be multiplexed.
    client: redis::Client,
    /// `<test prefix><owner>:`
    prefix: String,
}

impl Redis {
    /// Prepares a connection for `owner`'s keys; connects on first use, never fails on a down server.
    pub fn new(settings: &RedisSettings, owner: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| RedisError::BadUrl(e.to_string()))?;
        // Short timeouts: a request that needs Redis should learn quickly that it is gone and
        // take its degraded path; reconnect attempts back off up to 2 s.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
            .map_err(|e| RedisError::BadUrl(e.to_string()))?;
        Ok(Self {
            manager,
            client,
            prefix: format!("{}{owner}:", settings.prefix),
        })
    }

    /// A multiplexed connection handle (cheap to clone).
    pub fn conn(&self) -> ConnectionManager {
        self.manager.clone()
    }

    /// The client, for a dedicated pub/sub connection.
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// `name` with the owner (and test) prefix.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// Readiness probe: `PING` through the shared connection.
pub struct RedisProbe {
    pub redis: Redis,
    /// Whether the service is unready without Redis or merely degraded.
    pub critical: bool,
}

impl lab_http::Probe for RedisProbe {
    fn name(&self) -> &str {
        "redis"
    }

    fn critical(&self) -> bool {
        self.critical
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut conn = self.redis.conn();
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }
}
