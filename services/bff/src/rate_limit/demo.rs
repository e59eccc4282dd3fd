//! The rate-limit demo's own bucket: a visitor configures its shape (within bounds; remembered
//! in Redis for an hour, so every replica uses it), then takes one decision or fires a burst and
//! sees each request's fate. It is a real bucket, in Redis like the others, so what the demo
//! shows is what the limiter does.
//!
//! `POST /api/demo/rate-limit` does all three: starts the visitor's demo bucket afresh with the
//! asked shape, fires the burst, and judges it: a burst faster than the refill must be allowed
//! exactly `capacity` times (± 1 for a token refilled meanwhile).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::Extension;
use axum::extract::State;
use lab_cache::{Redis, redis};
use lab_http::{Json, Problem};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Bucket, Decision, Mode, RateLimiter};

/// A demo call to Redis is on a request's path: a slower Redis counts as unreachable.
const REDIS_BUDGET: Duration = Duration::from_millis(300);
use crate::session::Visitor;

/// The largest demo bucket: enough to see a burst drain it, small enough to read the results.
pub const MAX_CAPACITY: u32 = 50;
/// The fastest demo refill: a burst of 50 in-process calls is still "faster than refill".
pub const MAX_REFILL_PER_S: f64 = 10.0;
/// The slowest demo refill: one token per 100 s, already "never" within a demo.
pub const MIN_REFILL_PER_S: f64 = 0.01;
/// The largest burst: each is a Redis round trip inside one HTTP request.
pub const MAX_BURST: u32 = 50;

/// A demo bucket's shape, checked against the bounds.
#[derive(Debug, Clone, Copy)]
pub struct DemoBucket(Bucket);

impl DemoBucket {
    /// 422 naming the field when `capacity` or `refill_per_s` is out of bounds.
    pub fn parse(capacity: u32, refill_per_s: f64) -> Result<Self, Problem> {
        if !(1..=MAX_CAPACITY).contains(&capacity) {
            return Err(Problem::invalid_field(
                "capacity",
                format!("capacity must be between 1 and {MAX_CAPACITY}, not {capacity}"),
            ));
        }
        if !(MIN_REFILL_PER_S..=MAX_REFILL_PER_S).contains(&refill_per_s) {
            return Err(Problem::invalid_field(
                "refill_per_s",
                format!(
                    "refill_per_s must be between {MIN_REFILL_PER_S} and {MAX_REFILL_PER_S}, not {refill_per_s}"
                ),
            ));
        }
        Ok(Self(Bucket {
            capacity,
            refill_per_s,
        }))
    }

    pub fn bucket(&self) -> Bucket {
        self.0
    }
}

/// How long a configured shape is remembered after it was set: one sitting at the demo page.
const SHAPE_TTL: Duration = Duration::from_secs(60 * 60);
/// Shapes remembered in process while Redis is out; past this the map starts over.
const LOCAL_MAX_SHAPES: usize = 10_000;
/// The shape of a demo bucket nobody configured: small enough to drain by hand.
pub const DEFAULT_DEMO_BUCKET: Bucket = Bucket {
    capacity: 5,
    refill_per_s: 1.0,
};

/// Each visitor's configured demo shape: in Redis so every replica uses it, and in process for
/// while Redis is out.
pub(super) struct DemoShapes {
    /// Shapes under `rl-demo-shape:<scope>` in the BFF's prefix.
    redis: Redis,
    /// The same shapes, read when Redis cannot be; never held across an `.await`.
    local: Mutex<HashMap<String, Bucket>>,
}

impl DemoShapes {
    pub(super) fn new(redis: Redis) -> Self {
        Self {
            redis,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, HashMap<String, Bucket>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn set(&self, scope: &str, bucket: Bucket) {
        {
            let mut local = self.local();
            if local.len() >= LOCAL_MAX_SHAPES {
                local.clear();
            }
            local.insert(scope.to_owned(), bucket);
        }
        let Ok(json) = serde_json::to_string(&bucket) else {
            return;
        };
        let mut conn = self.redis.conn();
        let set = tokio::time::timeout(
            REDIS_BUDGET,
            redis::cmd("SET")
                .arg(self.redis.key(&format!("rl-demo-shape:{scope}")))
                .arg(json)
                .arg("PX")
                .arg(SHAPE_TTL.as_millis() as u64)
                .query_async::<()>(&mut conn),
        )
        .await;
        if !matches!(set, Ok(Ok(()))) {
            tracing::debug!(
                scope,
                "demo shape kept in process only; Redis is unreachable"
            );
        }
    }

    async fn get(&self, scope: &str) -> Bucket {
        let mut conn = self.redis.conn();
        let shared = tokio::time::timeout(
            REDIS_BUDGET,
            redis::cmd("GET")
                .arg(self.redis.key(&format!("rl-demo-shape:{scope}")))
                .query_async::<Option<String>>(&mut conn),
        )
        .await;
        match shared {
            Ok(Ok(Some(json))) => serde_json::from_str(&json).unwrap_or(DEFAULT_DEMO_BUCKET),
            Ok(Ok(None)) => DEFAULT_DEMO_BUCKET,
            _ => self
                .local()
                .get(scope)
                .copied()
                .unwrap_or(DEFAULT_DEMO_BUCKET),
        }
    }
}

impl RateLimiter {
    fn demo_key(scope: &str) -> String {
        format!("demo-bucket:{scope}")
    }

    /// Gives `scope`'s demo bucket this shape, and starts it afresh (full).
    pub async fn demo_configure(&self, scope: &str, bucket: DemoBucket) {
        self.demo_shapes.set(scope, bucket.0).await;
        self.buckets.reset(&Self::demo_key(scope)).await;
    }

    /// `scope`'s demo bucket shape: the configured one, else [`DEFAULT_DEMO_BUCKET`].
    pub async fn demo_shape(&self, scope: &str) -> Bucket {
        self.demo_shapes.get(scope).await
    }

    /// One decision from `scope`'s demo bucket, with the bucket's state after it.
    pub async fn demo_take(&self, scope: &str) -> Decision {
        let bucket = self.demo_shape(scope).await;
        self.demo_take_from(scope, bucket).await
    }

    async fn demo_take_from(&self, scope: &str, bucket: Bucket) -> Decision {
        let decision = self.buckets.take(&Self::demo_key(scope), bucket).await;
        self.publish(scope, None, &decision);
        decision
    }

    /// `n` decisions in a row from `scope`'s demo bucket, as fast as they go; 422 when `n` is
    /// out of bounds.
    pub async fn demo_burst(&self, scope: &str, n: u32) -> Result<Vec<Decision>, Problem> {
        if !(1..=MAX_BURST).contains(&n) {
            return Err(Problem::invalid_field(
                "burst",
                format!("burst must be between 1 and {MAX_BURST}, not {n}"),
            ));
        }
        let bucket = self.demo_shape(scope).await;
        let mut decisions = Vec::with_capacity(n as usize);
        for _ in 0..n {
            decisions.push(self.demo_take_from(scope, bucket).await);
        }
        Ok(decisions)
    }
}

/// The body of `POST /api/demo/rate-limit`.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
pub struct RateLimitDemo {
    /// The demo bucket's capacity, 1 to 50.
    pub capacity: u32,
    /// Its refill per second, 0.01 to 10.
    pub refill_per_s: f64,
    /// How many requests to fire at once, 1 to 50.
    pub burst: u32,
}

/// One request of the burst.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BurstResult {
    /// 1-based position in the burst.
    pub n: u32,
    #[serde(flatten)]
    pub decision: Decision,
}

/// What the burst did, and whether that is what a token bucket should do.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimitDemoReport {
    pub capacity: u32,
    pub refill_per_s: f64,
    pub burst: u32,
    /// Where the bucket was kept (`local` while Redis is out).
    pub mode: Mode,
    pub results: Vec<BurstResult>,
    pub allowed: u32,
    pub refused: u32,
    /// `min(burst, capacity)`: what a bucket that refilled nothing during the burst allows.
    pub expected_allowed: u32,
    /// Tokens refilled while the burst ran.
    pub refilled_during_burst: f64,
    /// `pass` (allowed = expected ± 1), `fail`, or `inconclusive` when the burst was slower than
    /// one refill interval and proves nothing.
    pub verdict: String,
    /// The verdict in a sentence.
    pub explanation: String,
}

/// Fires a burst at a fresh demo bucket of the asked shape and judges the outcome.
#[utoipa::path(post, path = "/api/demo/rate-limit", tag = "bff",
    request_body = RateLimitDemo,
    responses(
        (status = 200, body = RateLimitDemoReport),
        (status = 422, description = "capacity, refill_per_s or burst out of bounds", body = Problem),
        (status = 429, description = "the demo route's own limit is used up", body = Problem),
    ))]
pub(crate) async fn post_rate_limit_demo(
    State(limiter): State<RateLimiter>,
    visitor: Option<Extension<Visitor>>,
    Json(ask): Json<RateLimitDemo>,
) -> Result<Json<RateLimitDemoReport>, Problem> {
    let bucket = DemoBucket::parse(ask.capacity, ask.refill_per_s)?;
    let scope = visitor.map_or_else(crate::session::unknown_scope, |Extension(v)| v.scope());
    if !(1..=MAX_BURST).contains(&ask.burst) {
        return Err(Problem::invalid_field(
            "burst",
            format!("burst must be between 1 and {MAX_BURST}, not {}", ask.burst),
        ));
    }
    limiter.demo_configure(&scope, bucket).await;
    let started = Instant::now();
    let decisions = limiter.demo_burst(&scope, ask.burst).await?;
    let refilled = started.elapsed().as_secs_f64() * ask.refill_per_s;
    let allowed = decisions.iter().filter(|d| d.allowed).count() as u32;
    let expected = ask.burst.min(ask.capacity);
    let (verdict, explanation) = if refilled >= 1.0 {
        (
            "inconclusive",
            format!(
                "the burst took long enough to refill {refilled:.1} tokens; a faster burst or a slower refill shows the limit"
            ),
        )
    } else if allowed.abs_diff(expected) <= 1 {
        (
            "pass",
            format!(
                "{allowed} of {} allowed: the bucket's {} tokens, then refusals until it refills",
                ask.burst, ask.capacity
            ),
        )
    } else {
        (
            "fail",
            format!(
                "{allowed} of {} allowed, expected {expected} ± 1",
                ask.burst
            ),
        )
    };
    Ok(Json(RateLimitDemoReport {
        capacity: ask.capacity,
        refill_per_s: ask.refill_per_s,
        burst: ask.burst,
        mode: decisions.last().map_or(Mode::Shared, |d| d.mode),
        refused: ask.burst - allowed,
        allowed,
        expected_allowed: expected,
        refilled_during_burst: refilled,
        verdict: verdict.into(),
        explanation,
        results: decisions
            .into_iter()
            .zip(1..)
            .map(|(decision, n)| BurstResult { n, decision })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_demo_bucket_out_of_bounds_is_a_422_naming_the_field() {
        for (capacity, refill, field) in [
            (0, 1.0, "capacity"),
            (51, 1.0, "capacity"),
            (5, 0.0, "refill_per_s"),
            (5, 11.0, "refill_per_s"),
            (5, f64::NAN, "refill_per_s"),
        ] {
            let problem = DemoBucket::parse(capacity, refill).err();

            let problem = problem.unwrap_or_else(|| panic!("{capacity}/{refill} was accepted"));
            assert_eq!(problem.status, 422);
            assert_eq!(problem.extensions["field"], field);
        }
        assert!(DemoBucket::parse(50, 10.0).is_ok());
    }
}
