//! One token bucket decision: in Redis, atomically, so every BFF replica spends from the same
//! bucket; in process when Redis cannot be reached, so the limit still holds (per replica).
//!
//! The bucket is `{tokens, ts}` in a Redis hash. The Lua script reads the server clock (`TIME`),
//! adds `elapsed × refill` tokens up to the capacity, takes one if there is one and writes the
//! bucket back, all in one atomic step: no two replicas can spend the same token, and no replica's
//! clock matters. `redis::Script` sends it as `EVALSHA` and loads it again on `NOSCRIPT`. The same
//! script can take several tokens at once for a [`lease`](super::lease) while the bucket is far
//! from empty ([`Buckets::take_leased`], the route classes' path); the demo's bucket, whose
//! every decision is shown, takes one at a time ([`Buckets::take`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use lab_cache::{Redis, redis};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::lease::{LEASE_MAX, LEASE_SHARE, Leases};

/// Continuous refill on the Redis server's clock; takes up to `ARGV[4]` tokens but no more than
/// 1/`ARGV[5]` of those there are (one when that is less than one); answers `{tokens granted,
/// tokens left}`, the tokens left as a string since Redis would truncate a Lua number to an
/// integer.
const TAKE: &str = r"
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local capacity = tonumber(ARGV[1])
local refill_per_us = tonumber(ARGV[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now_us
end
tokens = math.min(capacity, tokens + math.max(0, now_us - ts) * refill_per_us)
local granted = 0
if tokens >= 1 then
  granted = math.max(1, math.min(tonumber(ARGV[4]), math.floor(tokens / tonumber(ARGV[5]))))
  tokens = tokens - granted
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now_us))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {granted, tostring(tokens)}
";

/// The bucket check sits on every request's path: a Redis slower than this is treated as gone.
const REDIS_BUDGET: Duration = Duration::from_millis(300);

/// After a failed Redis call, requests stay on the local buckets this long before one tries
/// Redis again, so an outage costs one slow request per period rather than every request.
const RETRY_REDIS_AFTER: Duration = Duration::from_secs(2);

/// Local buckets kept during an outage before idle ones are dropped: ~100 bytes each, so ~10 MB,
/// far beyond the clients one replica serves at once.
const LOCAL_MAX_BUCKETS: usize = 100_000;

/// A bucket's shape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// Tokens when full: the largest burst allowed.
    pub capacity: u32,
    /// Tokens added per second, continuously: the sustained rate allowed.
    pub refill_per_s: f64,
}

impl Bucket {
    /// Seconds until a bucket holding `tokens` holds `target`, rounded up.
    fn seconds_until(&self, tokens: f64, target: f64) -> u64 {
        if tokens >= target {
            0
        } else {
            ((target - tokens) / self.refill_per_s).ceil() as u64
        }
    }

    /// A bucket of `tokens` last updated `elapsed` ago, refilled to now.
    fn refilled(&self, tokens: f64, elapsed: Duration) -> f64 {
        (tokens + elapsed.as_secs_f64() * self.refill_per_s).min(f64::from(self.capacity))
    }
}

/// Where the buckets are kept right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// In Redis, shared by every replica.
    Shared,
    /// In this process: Redis is unreachable; each replica limits on its own.
    Local,
}

/// One decision, with what the client is told about its bucket.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    pub allowed: bool,
    /// The bucket's capacity (`RateLimit-Limit`).
    pub limit: u32,
    /// Whole tokens left (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Tokens left, with the fraction refilled so far.
    pub tokens: f64,
    /// Seconds until the bucket is full again (`RateLimit-Reset`).
    pub reset_s: u64,
    /// When refused, seconds until one token is back (`Retry-After`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_s: Option<u64>,
    /// Whether Redis or this process decided.
    pub mode: Mode,
}

impl Decision {
    fn new(bucket: Bucket, allowed: bool, tokens: f64, mode: Mode) -> Self {
        Self {
            allowed,
            limit: bucket.capacity,
            remaining: tokens.max(0.0).floor() as u32,
            tokens,
            reset_s: bucket.seconds_until(tokens, f64::from(bucket.capacity)),
            retry_after_s: (!allowed).then(|| bucket.seconds_until(tokens, 1.0).max(1)),
            mode,
        }
    }
}

/// The limiter's mode as `/api/health` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimitHealth {
    /// `shared` (Redis) or `local` (this process).
    pub mode: Mode,
    /// Why it is local.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A bucket in this process.
#[derive(Debug, Clone, Copy)]
struct Local {
    tokens: f64,
    at: Instant,
    /// When it would be full again untouched; past that, dropping it changes nothing.
    full_at: Instant,
}

/// Which store decides, and since when Redis is out.
#[derive(Debug)]
struct Switch {
    health: RateLimitHealth,
    /// While local: when the next request may try Redis again.
    retry_redis_at: Option<Instant>,
}

/// Token buckets in Redis, with in-process buckets taking over while Redis is unreachable.
#[derive(Clone)]
pub struct Buckets {
    /// Shared by every clone: one set of local buckets and one switch per process.
    inner: Arc<Inner>,
}

struct Inner {
    /// Where the shared buckets live (keys `rl:<class>:<scope>` under the BFF's prefix).
    redis: Redis,
    /// [`TAKE`], sent by its SHA once Redis knows it.
    script: redis::Script,
    /// The buckets used while Redis is out; never held across an `.await`.
    local: Mutex<HashMap<String, Local>>,
    /// Tokens taken from shared buckets ahead of need.
    leases: Leases,
    /// Shared or local, and when to try Redis again; never held across an `.await`.
    switch: Mutex<Switch>,
}

impl Buckets {
    pub fn new(redis: Redis) -> Self {
        Self {
            inner: Arc::new(Inner {
                redis,
                script: redis::Script::new(TAKE),
                local: Mutex::new(HashMap::new()),
                leases: Leases::default(),
                switch: Mutex::new(Switch {
                    health: RateLimitHealth {
                        mode: Mode::Shared,
                        reason: None,
                    },
                    retry_redis_at: None,
                }),
            }),
        }
    }

    /// Where buckets are kept now, and why.
    pub fn health(&self) -> RateLimitHealth {
        self.switch().health.clone()
    }

    fn switch(&self) -> std::sync::MutexGuard<'_, Switch> {
        self.inner
            .switch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn redis_key(&self, key: &str) -> String {
        self.inner.redis.key(&format!("rl:{key}"))
    }

    /// Takes one token from bucket `key` of shape `bucket`, deciding in Redis every time.
    pub async fn take(&self, key: &str, bucket: Bucket) -> Decision {
        match self.take_shared_or_local(key, bucket, 1, 1).await {
            Ok((granted, tokens)) => Decision::new(bucket, granted > 0, tokens, Mode::Shared),
            Err(local) => local,
        }
    }

    /// Takes one token of bucket `key` from this replica's lease of it, when it holds one.
    pub fn take_leased_now(&self, key: &str, bucket: Bucket) -> Option<Decision> {
        let tokens = self.inner.leases.spend(key, Instant::now())?;
        Some(Decision::new(bucket, true, tokens, Mode::Shared))
    }

    /// Takes one token from bucket `key`, from this replica's lease of it when it holds one;
    /// otherwise from Redis, leasing a few more while the bucket is far from empty.
    pub async fn take_leased(&self, key: &str, bucket: Bucket) -> Decision {
        if let Some(decision) = self.take_leased_now(key, bucket) {
            return decision;
        }
        match self
            .take_shared_or_local(key, bucket, LEASE_MAX, LEASE_SHARE)
            .await
        {
            Ok((0, tokens)) => Decision::new(bucket, false, tokens, Mode::Shared),
            Ok((granted, tokens)) => {
                let left = match granted - 1 {
                    0 => tokens,
                    kept => self.inner.leases.keep(key, kept, tokens, Instant::now()),
                };
                Decision::new(bucket, true, left, Mode::Shared)
            }
            Err(local) => local,
        }
    }

    /// Up to `want` tokens (at most 1/`share` of the bucket, at least one) from the shared
    /// bucket: `(granted, tokens left)`; the local bucket's decision while Redis is out.
    async fn take_shared_or_local(
        &self,
        key: &str,
        bucket: Bucket,
        want: u32,
        share: u32,
    ) -> Result<(u32, f64), Decision> {
        // Set only while local; then one request per period tries Redis again.
        let retry_redis_at = self.switch().retry_redis_at;
        let local_mode = retry_redis_at.is_some();
        if retry_redis_at.is_none_or(|at| Instant::now() >= at) {
            match tokio::time::timeout(REDIS_BUDGET, self.take_shared(key, bucket, want, share))
                .await
            {
                Ok(Ok(answer)) => {
                    if local_mode {
                        self.redis_answered();
                    }
                    return Ok(answer);
                }
                Ok(Err(e)) => self.redis_failed(e.to_string()),
                Err(_) => self.redis_failed(format!(
                    "Redis gave no answer within {} ms",
                    REDIS_BUDGET.as_millis()
                )),
            }
        }
        let (allowed, tokens) = self.take_local(key, bucket);
        Err(Decision::new(bucket, allowed, tokens, Mode::Local))
    }

    /// Drops bucket `key` everywhere: the next take finds it full.
    pub async fn reset(&self, key: &str) {
        self.inner.leases.drop_lease(key);
        self.inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        let mut conn = self.inner.redis.conn();
        let deleted = tokio::time::timeout(
            REDIS_BUDGET,
            redis::cmd("DEL")
                .arg(self.redis_key(key))
                .query_async::<i64>(&mut conn),
        )
        .await;
        if !matches!(deleted, Ok(Ok(_))) {
            tracing::debug!(key, "could not reset a shared bucket; Redis is unreachable");
        }
    }

    async fn take_shared(
        &self,
        key: &str,
        bucket: Bucket,
        want: u32,
        share: u32,
    ) -> redis::RedisResult<(u32, f64)> {
        let mut conn = self.inner.redis.conn();
        // An idle bucket refills completely in capacity / refill seconds; past that a missing
        // key means the same as a full one, so it may expire (one second of slack).
        let ttl_ms =
            (f64::from(bucket.capacity) / bucket.refill_per_s * 1000.0).ceil() as u64 + 1_000;
        let (granted, tokens): (u32, String) = self
            .inner
            .script
            .key(self.redis_key(key))
            .arg(bucket.capacity)
            .arg(bucket.refill_per_s)
            .arg(ttl_ms)
            .arg(want)
            .arg(share)
            .invoke_async(&mut conn)
            .await?;
        Ok((granted, tokens.parse().unwrap_or(0.0)))
    }

    fn take_local(&self, key: &str, bucket: Bucket) -> (bool, f64) {
        let now = Instant::now();
        let mut local = self
            .inner
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if local.len() >= LOCAL_MAX_BUCKETS && !local.contains_key(key) {
            // A bucket full by now is the same as none; drop those first, everything if the
            // map is still full (a moment of lenience beats unbounded memory).
            local.retain(|_, b| b.full_at > now);
            if local.len() >= LOCAL_MAX_BUCKETS {
                local.clear();
            }
        }
        let entry = local.entry(key.to_owned()).or_insert(Local {
            tokens: f64::from(bucket.capacity),
            at: now,
            full_at: now,
        });
        let mut tokens = bucket.refilled(entry.tokens, now.duration_since(entry.at));
        let allowed = tokens >= 1.0;
        if allowed {
            tokens -= 1.0;
        }
        let full_in = bucket.seconds_until(tokens, f64::from(bucket.capacity));
        *entry = Local {
            tokens,
            at: now,
            full_at: now + Duration::from_secs(full_in),
        };
        (allowed, tokens)
    }

    fn redis_answered(&self) {
        let mut switch = self.switch();
        if switch.health.mode == Mode::Local {
            tracing::info!("Redis answers again: rate limits are shared by every replica again");
            switch.health = RateLimitHealth {
                mode: Mode::Shared,
                reason: None,
            };
            switch.retry_redis_at = None;
        }
    }

    fn redis_failed(&self, reason: String) {
        let mut switch = self.switch();
        if switch.health.mode == Mode::Shared {
            tracing::warn!(%reason, "Redis is unreachable: rate limits fall back to this process's own buckets");
        }
        switch.health = RateLimitHealth {
            mode: Mode::Local,
            reason: Some(reason),
        };
        switch.retry_redis_at = Some(Instant::now() + RETRY_REDIS_AFTER);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Bucket = Bucket {
        capacity: 3,
        refill_per_s: 1.0,
    };

    #[test]
    fn a_refused_decision_says_when_one_token_and_a_full_bucket_are_back() {
        let refused = Decision::new(SMALL, false, 0.25, Mode::Shared);

        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.retry_after_s, Some(1));
        assert_eq!(refused.reset_s, 3);
        let allowed = Decision::new(SMALL, true, 2.0, Mode::Local);
        assert_eq!(
            (allowed.remaining, allowed.retry_after_s, allowed.reset_s),
            (2, None, 1)
        );
    }

    #[test]
    fn refill_is_continuous_and_capped_at_the_capacity() {
        assert_eq!(SMALL.refilled(0.0, Duration::from_millis(1_500)), 1.5);
        assert_eq!(SMALL.refilled(2.5, Duration::from_secs(10)), 3.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_local_bucket_allows_its_capacity_then_one_per_refill_interval() {
        let redis = Redis::new(&lab_cache::RedisSettings::default(), "test")
            .unwrap_or_else(|e| panic!("{e}"));
        let buckets = Buckets::new(redis);

        let burst: Vec<bool> = (0..5).map(|_| buckets.take_local("k", SMALL).0).collect();
        tokio::time::advance(Duration::from_millis(1_100)).await;
        let after_a_second = [
            buckets.take_local("k", SMALL).0,
            buckets.take_local("k", SMALL).0,
        ];

        assert_eq!(burst, [true, true, true, false, false]);
        assert_eq!(after_a_second, [true, false]);
    }
}
