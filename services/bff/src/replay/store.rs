//! Where replay keeps its state, in Redis: the in-flight marker of a key's first attempt and the
//! answer kept for its repeats, each call bounded so a slow Redis reads as an unreachable one.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderName, HeaderValue, StatusCode};
use lab_cache::{Redis, redis};
use serde::{Deserialize, Serialize};

use super::IDEMPOTENT_REPLAYED;

/// How long an answer is replayed: the usual retry horizon of a client (Stripe keeps keys 24 h).
const STORED_FOR: Duration = Duration::from_secs(24 * 60 * 60);
/// How long the in-flight marker outlives a BFF that died mid-request; far longer than any
/// proxied call may take, short enough that a stuck key frees itself soon.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(60);
/// Redis calls on the request path; a slower Redis is treated as unreachable.
const REDIS_BUDGET: Duration = Duration::from_millis(500);

/// A kept answer.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Stored {
    /// The request's fingerprint, to tell a repeat from a reuse of the key.
    pub fingerprint: String,
    pub status: u16,
    /// [`STORED_HEADERS`] present on the answer, in order.
    pub headers: Vec<(String, String)>,
    /// The body, base64.
    pub body: String,
}

impl Stored {
    pub fn into_response(self) -> Response {
        let body = STANDARD.decode(self.body).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let headers = response.headers_mut();
        for (name, value) in self.headers {
            if let (Ok(name), Ok(value)) =
                (HeaderName::try_from(name), HeaderValue::try_from(value))
            {
                headers.append(name, value);
            }
        }
        headers.insert(
            IDEMPOTENT_REPLAYED.clone(),
            HeaderValue::from_static("true"),
        );
        response
    }
}

/// The replay store.
#[derive(Clone)]
pub struct ReplayStore {
    /// Markers and kept answers, under `idem:<scope>:<sha256 of the key>` in the BFF's prefix.
    pub(super) redis: Redis,
    /// Keyed requests counted by outcome.
    pub(super) metrics: crate::edge::EdgeMetrics,
}

impl ReplayStore {
    pub fn new(redis: Redis, metrics: crate::edge::EdgeMetrics) -> Self {
        Self { redis, metrics }
    }

    pub(super) async fn get(&self, key: &str) -> redis::RedisResult<Option<String>> {
        let mut conn = self.redis.conn();
        bounded(redis::cmd("GET").arg(key).query_async(&mut conn)).await
    }

    /// Sets the in-flight marker; `false` when another attempt holds it.
    pub(super) async fn mark(&self, lock: &str, fingerprint: &str) -> redis::RedisResult<bool> {
        let mut conn = self.redis.conn();
        let set: Option<String> = bounded(
            redis::cmd("SET")
                .arg(lock)
                .arg(fingerprint)
                .arg("NX")
                .arg("PX")
                .arg(IN_FLIGHT_FOR.as_millis() as u64)
                .query_async(&mut conn),
        )
        .await?;
        Ok(set.is_some())
    }

    pub(super) async fn unmark(&self, lock: &str) {
        let mut conn = self.redis.conn();
        let deleted: redis::RedisResult<i64> =
            bounded(redis::cmd("DEL").arg(lock).query_async(&mut conn)).await;
        if let Err(e) = deleted {
            tracing::warn!(error = %e, "could not remove an idempotency marker; it expires by itself");
        }
    }

    /// Keeps the answer and removes the marker, in one transaction.
    pub(super) async fn keep(&self, record: &str, lock: &str, stored: &Stored) {
        let Ok(json) = serde_json::to_string(stored) else {
            return self.unmark(lock).await;
        };
        let mut conn = self.redis.conn();
        let kept: redis::RedisResult<()> = bounded(
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(record)
                .arg(json)
                .arg("PX")
                .arg(STORED_FOR.as_millis() as u64)
                .ignore()
                .cmd("DEL")
                .arg(lock)
                .ignore()
                .query_async(&mut conn),
        )
        .await;
        if let Err(e) = kept {
            tracing::warn!(error = %e, "could not keep an answer for replay; a repeat will run again");
        }
    }
}

async fn bounded<T>(call: impl Future<Output = redis::RedisResult<T>>) -> redis::RedisResult<T> {
    tokio::time::timeout(REDIS_BUDGET, call)
        .await
        .unwrap_or_else(|_| {
            Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer in time",
            )))
        })
}
