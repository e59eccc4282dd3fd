//! L1 in-process (moka) in front of L2 Redis in front of the database, with invalidations that
//! reach every replica through a Redis pub/sub channel.
//!
//! Entries carry the row's version (a counter bumped by every write). A write calls
//! [`TwoLevel::invalidate`] after its commit: locally it raises the key's *floor* and evicts L1;
//! in Redis it raises the key's floor, deletes the L2 entry and publishes `key|version`; every
//! replica's subscriber applies the same locally. A load that read a version below the floor —
//! it raced the write — is returned to its caller but never put into either level, so a stale
//! value cannot be cached after the invalidation that should have removed it. A subscriber that
//! reconnects drops all of L1, since it may have missed messages while it was away.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::Redis;

/// A cached value with the version of the row it was read from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Versioned<V> {
    pub version: i64,
    pub value: V,
}

/// Where a read was answered from (`X-Cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    L1,
    L2,
    Db,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::L1 => "l1",
            Self::L2 => "l2",
            Self::Db => "db",
        }
    }
}

/// Sizes and lifetimes of one cache.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// What is cached, e.g. `product`: part of every key and of the channel name.
    pub kind: &'static str,
    /// L1 entries at most.
    pub l1_capacity: u64,
    /// L1 lifetime: bounds staleness when Redis (and so invalidation) is down.
    pub l1_ttl: Duration,
    /// L2 lifetime.
    pub l2_ttl: Duration,
}

/// Counters for demos and metrics.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub l1_hits: AtomicU64,
    pub l2_hits: AtomicU64,
    /// Loads that reached the database: the number the stampede demo shows.
    pub db_loads: AtomicU64,
    /// Loads whose result was not cached because an invalidation overtook them.
    pub stale_loads_refused: AtomicU64,
    pub invalidations_received: AtomicU64,
}

type Flight<V> = Arc<OnceCell<Result<Option<(Arc<Versioned<V>>, Source)>, String>>>;

/// One two-level cache of `V` by string key.
pub struct TwoLevel<V> {
    config: CacheConfig,
    redis: Redis,
    /// Hashed with foldhash: a read hashes its key once here, and SipHash was measured at a
    /// few percent of a cached read's instructions (callgrind).
    l1: moka::sync::Cache<String, Arc<Versioned<V>>, foldhash::fast::RandomState>,
    /// Newest invalidated version per key; loads older than it are not cached. Kept longer than
    /// any load can take, so a slow load still finds its floor.
    floors: moka::sync::Cache<String, i64, foldhash::fast::RandomState>,
    /// Loads in progress, so N concurrent misses of one key make one database query.
    inflight: Mutex<HashMap<String, Flight<V>>>,
    /// Whether the invalidation subscriber is connected; false means L1 may lag other replicas.
    subscribed: AtomicBool,
    pub stats: CacheStats,
}

/// Keeps floors 10 minutes: far longer than a load can take (requests time out in seconds).
const FLOOR_TTL: Duration = Duration::from_secs(600);

/// Raises the floor and stores the entry only if it is not older than the floor, atomically.
const SET_IF_CURRENT: &str = r"
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) < floor then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Raises the floor (never lowers it), drops the entry, and tells every replica.
const INVALIDATE: &str = r"
local floor = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > floor then redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3]) end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', KEYS[3], ARGV[2])
return 1
";

impl<V> TwoLevel<V>
where
    V: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
{
    pub fn new(config: CacheConfig, redis: Redis) -> Arc<Self> {
        Arc::new(Self {
            l1: moka::sync::Cache::builder()
                .max_capacity(config.l1_capacity)
                .time_to_live(config.l1_ttl)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            floors: moka::sync::Cache::builder()
                .max_capacity(config.l1_capacity.saturating_mul(4))
                .time_to_live(FLOOR_TTL)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            inflight: Mutex::new(HashMap::new()),
            subscribed: AtomicBool::new(false),
            stats: CacheStats::default(),
            config,
            redis,
        })
    }

    fn l2_key(&self, key: &str) -> String {
        self.redis.key(&format!("cache:{}:{key}", self.config.kind))
    }

    fn floor_key(&self, key: &str) -> String {
        self.redis
            .key(&format!("cache:{}:{key}:floor", self.config.kind))
    }

    fn channel(&self) -> String {
        self.redis
            .key(&format!("cache:{}:invalidations", self.config.kind))
    }

    fn floor(&self, key: &str) -> i64 {
        self.floors.get(key).unwrap_or(i64::MIN)
    }

    /// What this replica's L1 holds for `key`, for demos and diagnostics.
    pub fn peek_l1(&self, key: &str) -> Option<Arc<Versioned<V>>> {
        self.l1.get(key)
    }

    /// What L2 holds for `key`, if Redis answers.
    pub async fn peek_l2(&self, key: &str) -> Result<Option<Versioned<V>>, String> {
        let mut conn = self.redis.conn();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.l2_key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Whether invalidations from other replicas are arriving.
    pub fn subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }

    /// Drops `key` from this replica's L1 and from L2 without raising any floor: makes the next
    /// read cold (the stampede demo).
    pub async fn evict(&self, key: &str) {
        self.l1.invalidate(key);
        let mut conn = self.redis.conn();
        let _: Result<i64, _> = redis::cmd("DEL")
            .arg(self.l2_key(key))
            .query_async(&mut conn)
            .await;
    }

    /// Reads `key`: L1, else L2, else `load` from the database. With `single_flight`, concurrent
    /// misses of one key share one load. `Ok(None)`: the row does not exist (not cached).
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        key: &str,
        single_flight: bool,
        load: F,
    ) -> Result<Option<(Arc<Versioned<V>>, Source)>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Versioned<V>>, String>>,
    {
        if let Some(hit) = self.l1.get(key) {
            self.stats.l1_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((hit, Source::L1)));
        }
        if !single_flight {
            return self.fill(key, load).await;
        }
        let flight = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            inflight.entry(key.to_owned()).or_default().clone()
        };
        let result = flight.get_or_init(|| self.fill(key, load)).await.clone();
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if inflight.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            inflight.remove(key);
        }
        result
    }

    async fn fill<F, Fut>(
        &self,
        key: &str,
        load: F,
    ) -> Result<Option<(Arc<Versioned<V>>, Source)>, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Versioned<V>>, String>>,
    {
        // L2 first; Redis being down only means going to the database.
        if let Ok(Some(entry)) = self.peek_l2(key).await
            && entry.version >= self.floor(key)
        {
            self.stats.l2_hits.fetch_add(1, Ordering::Relaxed);
            let entry = Arc::new(entry);
            self.insert_l1(key, &entry);
            return Ok(Some((entry, Source::L2)));
        }
        self.stats.db_loads.fetch_add(1, Ordering::Relaxed);
        let Some(entry) = load().await? else {
            return Ok(None);
        };
        let entry = Arc::new(entry);
        self.store(key, &entry).await;
        Ok(Some((entry, Source::Db)))
    }

    /// Puts a freshly loaded entry into both levels unless an invalidation overtook it.
    pub async fn store(&self, key: &str, entry: &Arc<Versioned<V>>) {
        if entry.version < self.floor(key) {
            self.stats
                .stale_loads_refused
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(json) = serde_json::to_string(entry.as_ref()) {
            let mut conn = self.redis.conn();
            let stored: Result<i64, _> = redis::Script::new(SET_IF_CURRENT)
                .key(self.l2_key(key))
                .key(self.floor_key(key))
                .arg(entry.version)
                .arg(json)
                .arg(self.config.l2_ttl.as_millis() as u64)
                .invoke_async(&mut conn)
                .await;
            if matches!(stored, Ok(0)) {
                // Another replica's write is newer than what we read: L1 must not keep it either.
                self.stats
                    .stale_loads_refused
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.insert_l1(key, entry);
    }

    fn insert_l1(&self, key: &str, entry: &Arc<Versioned<V>>) {
        // Re-checked at insertion: the floor may have risen while the value was being read.
        if entry.version >= self.floor(key) {
            self.l1.insert(key.to_owned(), entry.clone());
        } else {
            self.stats
                .stale_loads_refused
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn apply_invalidation(&self, key: &str, version: i64) {
        let floor = self.floor(key);
        if version > floor {
            self.floors.insert(key.to_owned(), version);
        }
        self.l1.invalidate(key);
    }

    /// After a committed write of `key` at `version`: evicts here, in L2, and on every replica.
    /// Returns whether Redis took it (when not, other replicas converge through the L1 TTL).
    pub async fn invalidate(&self, key: &str, version: i64) -> bool {
        self.apply_invalidation(key, version);
        let mut conn = self.redis.conn();
        let result: Result<i64, _> = redis::Script::new(INVALIDATE)
            .key(self.l2_key(key))
            .key(self.floor_key(key))
            .key(self.channel())
            .arg(version)
            .arg(format!("{key}|{version}"))
            .arg(FLOOR_TTL.as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, key, "could not publish a cache invalidation; other replicas converge within the L1 TTL");
        }
        result.is_ok()
    }

    /// Runs the invalidation subscriber until `shutdown`: applies every replica's invalidations
    /// to this L1, reconnects with backoff, and drops all of L1 after each (re)connect.
    pub fn spawn_subscriber(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move {
            // Reconnect quickly at first (a Redis restart takes well under a second), then at
            // most every 2 s.
            let mut backoff = Duration::from_millis(100);
            loop {
                match cache.redis.client().get_async_pubsub().await {
                    Ok(mut pubsub) => {
                        if pubsub.subscribe(cache.channel()).await.is_ok() {
                            cache.l1.invalidate_all();
                            cache.subscribed.store(true, Ordering::Relaxed);
                            backoff = Duration::from_millis(100);
                            let mut messages = pubsub.on_message();
                            loop {
                                tokio::select! {
                                    () = shutdown.cancelled() => return,
                                    msg = messages.next() => match msg {
                                        Some(msg) => {
                                            let payload: String = msg.get_payload().unwrap_or_default();
                                            if let Some((key, version)) = payload.rsplit_once('|')
                                                && let Ok(version) = version.parse()
                                            {
                                                cache.stats.invalidations_received.fetch_add(1, Ordering::Relaxed);
                                                cache.apply_invalidation(key, version);
                                            }
                                        }
                                        None => break,
                                    }
                                }
                            }
                            cache.subscribed.store(false, Ordering::Relaxed);
                            tracing::warn!(
                                kind = cache.config.kind,
                                "cache invalidation subscription lost; reconnecting"
                            );
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cache subscriber cannot reach Redis"),
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
