//! Tokens a replica has taken from a shared bucket ahead of need, so a busy visitor costs one
//! Redis round trip per handful of requests instead of one per request.
//!
//! The shared bucket stays the only source of tokens: a lease is tokens already taken out of it
//! (atomically, by the same script), so two replicas can never spend the same token and the
//! total allowed never exceeds what the bucket gave. What a lease trades is *when* a token
//! counts: it leaves the shared bucket when leased and is spent here a little later. So the
//! script grants a lease only while the bucket is far from empty (a fraction of what it holds,
//! [`LEASE_SHARE`]); near empty every request is decided in Redis as before, which is what keeps
//! a burst split over replicas at the bucket's capacity. A lease not spent within [`LEASE_TTL`]
//! is dropped: its tokens are lost to the visitor (never given to anyone else), the cost of not
//! returning them, bounded by the same fraction.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// The most tokens one lease takes: one Redis round trip per 32 requests of a busy visitor
/// makes Redis a small part of a request's cost, and a few hundred requests per second of one
/// visitor renew it often enough that little is ever held.
pub const LEASE_MAX: u32 = 32;

/// A lease takes at most 1/`LEASE_SHARE` of the tokens the bucket holds, and only when that is
/// two or more: a bucket of 100 lends 12, of 50 lends 6, and below 16 tokens every request is
/// decided in Redis, so the last tokens of a bucket go one by one to whichever replica asks.
pub const LEASE_SHARE: u32 = 8;

/// How long leased tokens stay spendable: long enough to serve the requests of a busy visitor
/// that follow, short enough that tokens taken before a pause do not count much later (a
/// visitor can spend at most its lease beyond the bucket's rate, within this time).
pub const LEASE_TTL: Duration = Duration::from_millis(250);

/// Leases kept before expired ones are dropped: tens of bytes each; far beyond the visitors one
/// replica serves in a quarter of a second.
const MAX_LEASES: usize = 10_000;

/// One bucket's tokens held by this replica.
#[derive(Debug, Clone, Copy)]
struct Lease {
    /// Tokens still to spend.
    tokens: u32,
    /// What the shared bucket held after the last lease was taken, for `RateLimit-Remaining`.
    shared_left: f64,
    /// When the tokens stop being spendable.
    until: Instant,
}

/// This replica's leases, by bucket key. The lock is held for a lookup, never across an await.
/// foldhash rather than SipHash: the lookup runs on every limited request (SipHash ~270
/// instructions of it, callgrind), its seed is random per process as SipHash's is, and the map
/// is bounded by `MAX_LEASES` whatever the keys.
#[derive(Debug, Default)]
pub struct Leases(Mutex<HashMap<Box<str>, Lease, foldhash::fast::RandomState>>);

impl Leases {
    /// Spends one leased token of bucket `key`; the tokens the visitor has left (shared and
    /// leased), or `None` when there is no live lease with a token in it.
    pub fn spend(&self, key: &str, now: Instant) -> Option<f64> {
        let mut leases = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let lease = leases.get_mut(key)?;
        if lease.tokens == 0 || lease.until <= now {
            return None;
        }
        lease.tokens -= 1;
        Some(lease.shared_left + f64::from(lease.tokens))
    }

    /// Keeps `tokens` more of bucket `key` (the rest of a lease just granted, the bucket
    /// holding `shared_left` after it) until `now + LEASE_TTL`; what the visitor has left.
    /// Tokens of a live lease are added to, not replaced: concurrent requests that each found
    /// the lease empty each bring their own grant back.
    pub fn keep(&self, key: &str, tokens: u32, shared_left: f64, now: Instant) -> f64 {
        let mut leases = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if leases.len() >= MAX_LEASES && !leases.contains_key(key) {
            leases.retain(|_, lease| lease.until > now);
            if leases.len() >= MAX_LEASES {
                // Dropping leases only loses tokens for their visitors, never gives any away.
                leases.clear();
            }
        }
        let until = now + LEASE_TTL;
        let lease = leases.entry(key.into()).or_insert(Lease {
            tokens: 0,
            shared_left,
            until,
        });
        if lease.until <= now {
            lease.tokens = 0;
        }
        lease.tokens += tokens;
        lease.shared_left = shared_left;
        lease.until = until;
        shared_left + f64::from(lease.tokens)
    }

    /// Forgets bucket `key`'s lease.
    pub fn drop_lease(&self, key: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_spent_token_by_token_and_not_after_it_expires() {
        let leases = Leases::default();
        let now = Instant::now();
        assert_eq!(leases.spend("k", now), None);

        assert_eq!(leases.keep("k", 2, 10.0, now), 12.0);
        assert_eq!(leases.spend("k", now), Some(11.0));
        assert_eq!(leases.spend("k", now), Some(10.0));
        assert_eq!(leases.spend("k", now), None);

        leases.keep("k", 3, 10.0, now);
        tokio::time::advance(LEASE_TTL).await;
        assert_eq!(leases.spend("k", Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn grants_that_arrive_together_add_up_and_an_expired_lease_starts_again() {
        let leases = Leases::default();
        let now = Instant::now();

        leases.keep("k", 3, 20.0, now);
        assert_eq!(leases.keep("k", 2, 18.0, now), 23.0);
        tokio::time::advance(LEASE_TTL).await;
        assert_eq!(leases.keep("k", 1, 5.0, Instant::now()), 6.0);
        leases.drop_lease("k");
        assert_eq!(leases.spend("k", Instant::now()), None);
    }
}
