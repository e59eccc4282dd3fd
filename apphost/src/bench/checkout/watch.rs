//! Which orders are final: the orders in flight are looked up by primary key every [`POLL`] in
//! orders' own table, so waiting costs the services nothing (polling `GET /orders/{id}` from every
//! client would load orders as much as the placements do).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How often the in-flight orders are looked up: well under the latency measured.
pub const POLL: Duration = Duration::from_millis(5);

/// How an order ended, as orders recorded it.
#[derive(Debug)]
pub struct Finished {
    pub status: String,
    /// Placed → the terminal transition recorded by orders (when a GET first shows it), ms.
    pub visible_ms: f64,
    /// When checkout decided the final state, seconds since the Unix epoch.
    pub finished_epoch: f64,
    /// When the poller saw it.
    pub seen: Instant,
}

/// The orders in flight, each with whom to tell when it is final.
#[derive(Clone, Default)]
pub struct Watcher {
    waiting: Arc<Mutex<HashMap<Uuid, oneshot::Sender<Finished>>>>,
    /// Lookups run so far: each is a transaction in the bench database that is the bench's, not
    /// the cluster's.
    lookups: Arc<AtomicU64>,
}

type Row = (Uuid, String, Option<f64>, Option<f64>);

impl Watcher {
    pub fn watch(&self, order: Uuid) -> oneshot::Receiver<Finished> {
        let (tx, rx) = oneshot::channel();
        self.lock().insert(order, tx);
        rx
    }

    /// Lookups run so far.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    pub fn forget(&self, order: Uuid) {
        self.lock().remove(&order);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, oneshot::Sender<Finished>>> {
        // A panic elsewhere while holding it leaves the map intact: keep using it.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every [`POLL`], looks up the orders in flight by primary key until `stop`.
    pub async fn run(self, pool: PgPool, stop: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            let ids: Vec<Uuid> = self.lock().keys().copied().collect();
            if ids.is_empty() {
                continue;
            }
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT o.id, o.status, \
                        EXTRACT(EPOCH FROM (SELECT min(h.recorded_at) FROM orders.order_history h \
                                            WHERE h.order_id = o.id AND h.terminal) - o.placed_at)::float8 * 1000, \
                        EXTRACT(EPOCH FROM o.finished_at)::float8 \
                 FROM orders.orders o WHERE o.id = ANY($1) AND o.status <> 'Pending'",
            )
            .bind(&ids)
            .fetch_all(&pool)
            .await
            .context("looking up orders in flight")?;
            self.lookups.fetch_add(1, Ordering::Relaxed);
            let seen = Instant::now();
            let mut waiting = self.lock();
            for (id, status, visible_ms, finished_epoch) in rows {
                if let Some(tx) = waiting.remove(&id) {
                    let _ = tx.send(Finished {
                        status,
                        visible_ms: visible_ms.unwrap_or(f64::NAN),
                        finished_epoch: finished_epoch.unwrap_or(f64::NAN),
                        seen,
                    });
                }
            }
        }
    }
}
