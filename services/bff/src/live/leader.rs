//! Which BFF replica speaks for the cluster: one holds a short Redis lease and runs the shared
//! probes and the bus tap, so two replicas do not push every health report and message twice.
//! When Redis is unreachable every replica leads for its own viewers (the backplane is local
//! then anyway); when the leader dies its lease runs out and another replica takes over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lab_cache::Redis;
use tokio_util::sync::CancellationToken;

/// The lease: long enough to ride out a slow renewal, short enough that a dead leader is
/// replaced within a few health periods.
const LEASE: Duration = Duration::from_secs(6);
/// Renewed (or tried for) three times per lease.
const RENEW_EVERY: Duration = Duration::from_secs(2);

/// Extends the lease only if this replica still holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Whether this replica leads now; cheap to clone and read.
#[derive(Clone)]
pub struct Leadership {
    leading: Arc<AtomicBool>,
}

impl Leadership {
    /// Campaigns for the lease `live:leader` as `instance_id` until `shutdown`; gives it up on
    /// the way out so a successor does not wait for it to expire.
    pub fn start(
        redis: Redis,
        instance_id: String,
        shutdown: CancellationToken,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Self {
        let leading = Arc::new(AtomicBool::new(false));
        let this = Self {
            leading: Arc::clone(&leading),
        };
        tracker.spawn(async move {
            let key = redis.key("leader");
            let renew = redis::Script::new(RENEW);
            let mut conn = redis.conn();
            loop {
                let lease_ms = LEASE.as_millis() as u64;
                let acquired: Result<Option<String>, _> = redis::cmd("SET")
                    .arg(&key)
                    .arg(&instance_id)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .query_async(&mut conn)
                    .await;
                let now = match acquired {
                    Ok(Some(_)) => true,
                    Ok(None) => renew
                        .key(&key)
                        .arg(&instance_id)
                        .arg(lease_ms)
                        .invoke_async::<i64>(&mut conn)
                        .await
                        .map(|extended| extended == 1)
                        // Lost Redis between the two calls: lead locally.
                        .unwrap_or(true),
                    // No Redis: no one can be elected, so each replica serves its own viewers.
                    Err(_) => true,
                };
                if now != leading.swap(now, Ordering::Relaxed) {
                    tracing::info!(leading = now, "live leadership changed");
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(RENEW_EVERY) => {}
                }
            }
            if leading.load(Ordering::Relaxed) {
                let _: Result<i64, _> = redis::Script::new(
                    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0",
                )
                .key(&key)
                .arg(&instance_id)
                .invoke_async(&mut conn)
                .await;
            }
        });
        this
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }
}
