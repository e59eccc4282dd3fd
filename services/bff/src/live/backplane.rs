//! The push backplane: one Redis stream that every producer appends to and every BFF replica
//! reads back, so every viewer of every replica sees the same events, in the same order, under
//! the same ids — the stream entry id is the SSE event id, which is what makes `Last-Event-ID`
//! resume work on whichever replica a browser reconnects to.
//!
//! Writes go through a bounded queue to one writer task, so a producer (a request handler, a
//! demo) never waits on Redis. When Redis is unreachable the backplane says so and degrades to
//! this replica alone: events are delivered to its own viewers under local ids, and it goes back
//! to the shared stream, catching up from the last id it read, when Redis returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_cache::Redis;
use lab_contracts::live::LiveEvent;
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Entries the stream keeps (trimmed approximately, which is O(1)): minutes of a busy cluster, so
/// a viewer that reconnects after a blip resumes without a gap.
const STREAM_LEN: usize = 10_000;
/// Events a producer may queue for the writer before new ones are dropped (and counted).
const WRITE_QUEUE: usize = 4_096;
/// Events a viewer may fall behind before it resyncs from the stream.
const FANOUT: usize = 1_024;
/// How long one `XREAD` waits for new entries; also how quickly the reader notices a stop.
const READ_BLOCK: Duration = Duration::from_millis(2_000);
/// Reconnect backoff of the reader and writer: quick after a blip, at most every 2 s.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Entries read per `XREAD` / `XRANGE`.
const BATCH: usize = 500;

/// One event as it goes out: its id, what a viewer filters on, and its JSON, serialised once for
/// every viewer.
#[derive(Debug)]
pub struct Delivered {
    /// The stream entry id (`1732590000000-0`), or `local-<n>` while Redis is unreachable.
    pub id: String,
    /// The event's kind (`health`, `saga`, …).
    pub kind: &'static str,
    /// The session the event is for, if only one may see it.
    pub session: Option<String>,
    /// Whether the latest of this kind is replayed to a viewer on connect.
    pub snapshot: bool,
    /// The event as JSON.
    pub json: String,
}

impl Delivered {
    fn new(id: String, event: &LiveEvent, json: String) -> Self {
        Self {
            id,
            kind: event.kind(),
            session: event.session.clone(),
            snapshot: event.body.is_snapshot(),
            json,
        }
    }

    /// Whether a viewer with `session` may see it.
    pub fn visible_to(&self, session: Option<&str>) -> bool {
        match &self.session {
            None => true,
            Some(own) => session == Some(own.as_str()),
        }
    }
}

/// Where the backplane stands, for `/api/health`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BackplaneStatus {
    /// `shared` (the Redis stream) or `local` (this replica only).
    pub mode: String,
    /// Why it is local.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Events dropped because producers outran the writer.
    pub dropped: u64,
}

/// A handle on the backplane; cheap to clone.
#[derive(Clone)]
pub struct Backplane {
    inner: Arc<Inner>,
}

struct Inner {
    /// The stream's Redis.
    redis: Redis,
    /// The stream key.
    key: String,
    /// To the writer task.
    writes: mpsc::Sender<LiveEvent>,
    /// From the reader (or the local fallback) to this replica's viewers.
    fanout: broadcast::Sender<Arc<Delivered>>,
    /// Whether the shared stream is working (both directions).
    shared: AtomicBool,
    /// Why it is not.
    reason: Mutex<Option<String>>,
    /// The latest event of each snapshot kind, replayed to a viewer on connect.
    latest: Mutex<HashMap<&'static str, Arc<Delivered>>>,
    /// Ids of events delivered locally while Redis is away.
    local_seq: AtomicU64,
    /// Events dropped on a full write queue.
    dropped: AtomicU64,
}

impl Backplane {
    /// Starts the writer and the reader on `redis` (its `live:` keys); they stop with `shutdown`.
    pub fn start(redis: Redis, shutdown: &CancellationToken, tracker: &TaskTracker) -> Self {
        let (writes, queue) = mpsc::channel(WRITE_QUEUE);
        let (fanout, _) = broadcast::channel(FANOUT);
        let inner = Arc::new(Inner {
            key: redis.key("events"),
            redis,
            writes,
            fanout,
            shared: AtomicBool::new(true),
            reason: Mutex::new(None),
            latest: Mutex::new(HashMap::new()),
            local_seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        tracker.spawn(write_loop(Arc::clone(&inner), queue, shutdown.clone()));
        tracker.spawn(read_loop(Arc::clone(&inner), shutdown.clone()));
        Self { inner }
    }

    /// Queues `event` for every viewer; never waits. Dropped (and counted) only when producers
    /// outrun Redis by thousands of events.
    pub fn publish(&self, event: LiveEvent) {
        if self.inner.writes.try_send(event).is_err() {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Delivered>> {
        self.inner.fanout.subscribe()
    }

    /// The latest event of each snapshot kind.
    pub fn snapshots(&self) -> Vec<Arc<Delivered>> {
        let latest = self
            .inner
            .latest
            .lock()
            .map(|l| l.values().cloned().collect());
        let mut all: Vec<Arc<Delivered>> = latest.unwrap_or_default();
        all.sort_by(|a, b| a.kind.cmp(b.kind));
        all
    }

    /// Where it stands.
    pub fn status(&self) -> BackplaneStatus {
        let shared = self.inner.shared.load(Ordering::Relaxed);
        BackplaneStatus {
            mode: if shared { "shared" } else { "local" }.into(),
            reason: if shared {
                None
            } else {
                self.inner.reason.lock().ok().and_then(|r| r.clone())
            },
            dropped: self.inner.dropped.load(Ordering::Relaxed),
        }
    }

    /// Whether events reach the other replicas.
    pub fn is_shared(&self) -> bool {
        self.inner.shared.load(Ordering::Relaxed)
    }

    /// Events after `id` (exclusive), oldest first, at most `limit`; `None` when the stream
    /// cannot be read (Redis down, or `id` is not a stream id).
    pub async fn after(&self, id: &str, limit: usize) -> Option<Vec<Arc<Delivered>>> {
        if !is_stream_id(id) {
            return None;
        }
        let mut conn = self.inner.redis.conn();
        let entries: Vec<Entry> = redis::cmd("XRANGE")
            .arg(&self.inner.key)
            .arg(format!("({id}"))
            .arg("+")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(entries.into_iter().filter_map(decode).collect())
    }

    /// The newest `limit` events, oldest first; empty when the stream cannot be read.
    pub async fn recent(&self, limit: usize) -> Vec<Arc<Delivered>> {
        let mut conn = self.inner.redis.conn();
        let entries: Vec<Entry> = redis::cmd("XREVRANGE")
            .arg(&self.inner.key)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        let mut events: Vec<Arc<Delivered>> = entries.into_iter().filter_map(decode).collect();
        events.reverse();
        events
    }
}

impl Inner {
    fn degrade(&self, reason: String) {
        if self.shared.swap(false, Ordering::Relaxed) {
            tracing::warn!(%reason, "live backplane degraded to this replica alone");
        }
        if let Ok(mut r) = self.reason.lock() {
            *r = Some(reason);
        }
    }

    fn recover(&self) {
        if !self.shared.swap(true, Ordering::Relaxed) {
            tracing::info!("live backplane shared again");
        }
    }

    /// Hands `event` to this replica's viewers.
    fn deliver(&self, event: Arc<Delivered>) {
        if event.snapshot
            && event.session.is_none()
            && let Ok(mut latest) = self.latest.lock()
        {
            latest.insert(event.kind, Arc::clone(&event));
        }
        // No viewers is not an error.
        let _ = self.fanout.send(event);
    }
}

/// A stream entry as Redis returns it: its id and its fields and values, alternating.
type Entry = (String, Vec<String>);
/// One stream's entries in an `XREAD` answer: the key and its entries.
type StreamEntries = (String, Vec<Entry>);

/// `(id, [field, value, …])` of a stream entry → the event in its `e` field.
fn decode((id, fields): Entry) -> Option<Arc<Delivered>> {
    let json = fields
        .chunks_exact(2)
        .find(|kv| kv[0] == "e")
        .map(|kv| kv[1].clone())?;
    let event: LiveEvent = serde_json::from_str(&json).ok()?;
    Some(Arc::new(Delivered::new(id, &event, json)))
}

/// `<ms>-<seq>`, as Redis stream ids are.
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        !ms.is_empty()
            && !seq.is_empty()
            && ms.bytes().all(|b| b.is_ascii_digit())
            && seq.bytes().all(|b| b.is_ascii_digit())
    })
}

async fn write_loop(
    inner: Arc<Inner>,
    mut queue: mpsc::Receiver<LiveEvent>,
    shutdown: CancellationToken,
) {
    let mut conn = inner.redis.conn();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            e = queue.recv() => match e { Some(e) => e, None => return },
        };
        let Ok(json) = serde_json::to_string(&event) else {
            continue;
        };
        if !inner.shared.load(Ordering::Relaxed) {
            // Redis is away (the reader says when it is back): no write waits out its timeout.
            let n = inner.local_seq.fetch_add(1, Ordering::Relaxed);
            inner.deliver(Arc::new(Delivered::new(format!("local-{n}"), &event, json)));
            continue;
        }
        let added: Result<String, redis::RedisError> = redis::cmd("XADD")
            .arg(&inner.key)
            .arg("MAXLEN")
            .arg("~")
            .arg(STREAM_LEN)
            .arg("*")
            .arg("e")
            .arg(&json)
            .query_async(&mut conn)
            .await;
        if let Err(e) = added {
            // Redis is away: this replica's viewers still get it, under a local id.
            inner.degrade(format!("Redis: {e}"));
            let n = inner.local_seq.fetch_add(1, Ordering::Relaxed);
            inner.deliver(Arc::new(Delivered::new(format!("local-{n}"), &event, json)));
        }
    }
}

async fn read_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    // `$` until the first entry is read: a replica that starts streams what comes next.
    let mut last = "$".to_owned();
    let mut backoff = BACKOFF_MIN;
    loop {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            // A blocked XREAD answers after READ_BLOCK; anything much later is a dead server.
            .set_response_timeout(Some(READ_BLOCK + Duration::from_secs(3)));
        let connected = tokio::select! {
            () = shutdown.cancelled() => return,
            c = inner.redis.client().get_multiplexed_async_connection_with_config(&config) => c,
        };
        match connected {
            Ok(mut conn) => loop {
                let mut xread = redis::cmd("XREAD");
                xread
                    .arg("COUNT")
                    .arg(BATCH)
                    .arg("BLOCK")
                    .arg(READ_BLOCK.as_millis() as u64)
                    .arg("STREAMS")
                    .arg(&inner.key)
                    .arg(&last);
                let read: Result<Option<Vec<StreamEntries>>, _> = tokio::select! {
                    () = shutdown.cancelled() => return,
                    r = xread.query_async(&mut conn) => r,
                };
                match read {
                    Ok(streams) => {
                        inner.recover();
                        backoff = BACKOFF_MIN;
                        for (_, entries) in streams.unwrap_or_default() {
                            for entry in entries {
                                last.clone_from(&entry.0);
                                if let Some(event) = decode(entry) {
                                    inner.deliver(event);
                                }
                            }
                        }
                    }
                    Err(e) => {
                        inner.degrade(format!("Redis: {e}"));
                        break;
                    }
                }
            },
            Err(e) => inner.degrade(format!("Redis: {e}")),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_redis_stream_ids_are_resumable() {
        assert!(is_stream_id("1732590000000-0"));
        assert!(is_stream_id("1-12"));
        assert!(!is_stream_id("local-3"));
        assert!(!is_stream_id("-1"));
        assert!(!is_stream_id("1-"));
        assert!(!is_stream_id("1-2-3"));
        assert!(!is_stream_id("+"));
    }
}
