//! Revoked access tokens, by JTI, shared by every service through Redis.
//!
//! Identity calls [`Revocations::revoke`]: one script sets `auth:revoked:<jti>` to expire with the
//! token, adds the JTI to the sorted set `auth:revoked` scored by the token's expiry (pruning
//! what has expired) and publishes `jti|exp` on `auth:revocations`. Every service's subscriber
//! adds published JTIs to a local set, so a check costs no round trip; after each (re)connect it
//! subscribes *first* and then reloads the whole set from the sorted set, so nothing published
//! while it was away is missed. Until the first load has completed (a service that just started)
//! a check asks Redis directly, so a revoked token stays refused across restarts.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use lab_cache::{Redis, RedisError, RedisSettings};
use tokio_util::sync::CancellationToken;

/// The Redis owner of revocation keys, the same for the writer (identity) and every reader.
pub const OWNER: &str = "auth";

/// Sets the per-token key, indexes it by expiry, prunes, and tells every service.
const REVOKE: &str = r"
redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
redis.call('PUBLISH', KEYS[3], ARGV[1] .. '|' .. ARGV[2])
return 1
";

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error(transparent)]
    Settings(#[from] RedisError),
    #[error("Redis did not take the revocation: {0}")]
    Redis(String),
}

/// The local view of revoked JTIs, kept current by [`Revocations::spawn_subscriber`].
pub struct Revocations {
    redis: Redis,
    /// JTI → the token's expiry (unix seconds); entries past it are dropped.
    local: Mutex<HashMap<String, i64>>,
    /// Subscribed and loaded: the local set is complete and checks need not ask Redis.
    synced: AtomicBool,
}

pub(crate) fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl Revocations {
    pub fn new(settings: &RedisSettings) -> Result<Arc<Self>, RevocationError> {
        Ok(Arc::new(Self {
            redis: Redis::new(settings, OWNER)?,
            local: Mutex::new(HashMap::new()),
            synced: AtomicBool::new(false),
        }))
    }

    fn jti_key(&self, jti: &str) -> String {
        self.redis.key(&format!("revoked:{jti}"))
    }

    fn index_key(&self) -> String {
        self.redis.key("revoked")
    }

    fn channel(&self) -> String {
        self.redis.key("revocations")
    }

    /// Whether the local set is complete (subscribed and loaded).
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn remember(&self, jti: &str, exp: i64) {
        let now = now_s();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        // Pruning on every 256th insert keeps the set bounded by the tokens still alive.
        if local.len() % 256 == 255 {
            local.retain(|_, e| *e >= now);
        }
        local.insert(jti.to_owned(), exp);
    }

    /// Revokes `jti` until `exp` everywhere: Redis first (the durable record), then locally.
    pub async fn revoke(&self, jti: &str, exp: i64) -> Result<(), RevocationError> {
        let now = now_s();
        if exp < now {
            return Ok(());
        }
        let mut conn = self.redis.conn();
        redis::Script::new(REVOKE)
            .key(self.jti_key(jti))
            .key(self.index_key())
            .key(self.channel())
            .arg(jti)
            .arg(exp)
            .arg(now)
            .invoke_async::<i64>(&mut conn)
            .await
            .map_err(|e| RevocationError::Redis(e.to_string()))?;
        self.remember(jti, exp);
        Ok(())
    }

    /// Whether `jti` is revoked. Answers from the local set once synced; before that, asks Redis
    /// and, if Redis cannot answer either, goes by what is known locally.
    pub async fn is_revoked(&self, jti: &str) -> bool {
        let known = {
            let local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            local.get(jti).is_some_and(|exp| *exp >= now_s())
        };
        if known || self.synced() {
            return known;
        }
        let mut conn = self.redis.conn();
        match redis::cmd("GET")
            .arg(self.jti_key(jti))
            .query_async::<Option<i64>>(&mut conn)
            .await
        {
            Ok(Some(exp)) => {
                self.remember(jti, exp);
                true
            }
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "revocation list unreachable; accepting a token not known to be revoked");
                false
            }
        }
    }

    /// Replaces the local set with every unexpired revocation in Redis.
    async fn reload(&self) -> Result<usize, String> {
        let mut conn = self.redis.conn();
        let entries: Vec<(String, f64)> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.index_key())
            .arg(now_s())
            .arg("+inf")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let count = entries.len();
        let fresh: HashMap<String, i64> = entries.into_iter().map(|(j, e)| (j, e as i64)).collect();
        let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
        // Merged, not replaced: a revocation applied locally a moment ago stays.
        local.extend(fresh);
        Ok(count)
    }

    /// Follows the revocation channel until `shutdown`, reconnecting with backoff and reloading
    /// the whole set after every (re)connect.
    pub fn spawn_subscriber(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            // As the cache subscriber: quick first retries (a Redis restart is sub-second), then
            // at most every 2 s.
            let mut backoff = Duration::from_millis(100);
            loop {
                match this.redis.client().get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(this.channel()).await.is_ok() {
                            match this.reload().await {
                                Ok(count) => {
                                    tracing::debug!(count, "revocation list loaded");
                                    this.synced.store(true, Ordering::Relaxed);
                                    backoff = Duration::from_millis(100);
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not load the revocation list")
                                }
                            }
                            if this.synced() {
                                let mut messages = pubsub.on_message();
                                loop {
                                    tokio::select! {
                                        () = shutdown.cancelled() => return,
                                        msg = messages.next() => match msg {
                                            Some(msg) => {
                                                let payload: String = msg.get_payload().unwrap_or_default();
                                                if let Some((jti, exp)) = payload.rsplit_once('|')
                                                    && let Ok(exp) = exp.parse()
                                                {
                                                    this.remember(jti, exp);
                                                }
                                            }
                                            None => break,
                                        }
                                    }
                                }
                                this.synced.store(false, Ordering::Relaxed);
                                tracing::warn!("revocation subscription lost; reconnecting");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "revocation subscriber cannot reach Redis")
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })
    }
}
