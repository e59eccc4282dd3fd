//! A circuit breaker for one endpoint: failure ratio over a sliding window with a minimum
//! throughput, open for a break, then one half-open probe.
//!
//! One breaker per endpoint (per replica) is linkerd's failure accrual: a replica whose breaker
//! is open is skipped by the round-robin (ejected), its probe lets it back in, and a service
//! whose endpoints are all open fails fast.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::events::{BreakerState, Events, ResilienceEvent};
use crate::policy::BreakerPolicy;
use crate::window::Window;

/// What a caller is told while a probe is already in flight: it resolves within one attempt,
/// so asking again in a second is soon enough.
const PROBE_IN_FLIGHT_RETRY: Duration = Duration::from_secs(1);

/// The breaker of one endpoint; cheap to clone, every clone is the same breaker.
#[derive(Debug, Clone)]
pub struct Breaker(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    /// The service the endpoint belongs to.
    service: Arc<str>,
    /// The endpoint's base URL.
    endpoint: Arc<str>,
    policy: BreakerPolicy,
    events: Events,
    /// Held for a few arithmetic operations, never across an await.
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Calls (`a`) and failures (`b`) while closed.
    window: Window,
    /// When the current break ends (meaningful while open).
    open_until: Instant,
    /// Whether the half-open probe has been handed out and not yet reported.
    probing: bool,
    counters: Counters,
}

/// Totals since start, for the status route and the page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Calls that succeeded.
    pub successes: u64,
    /// Calls that failed (timeout, transport error, 5xx).
    pub failures: u64,
    /// Calls refused because the breaker was open.
    pub rejected: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

/// A breaker's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BreakerSnapshot {
    pub service: Arc<str>,
    pub endpoint: Arc<str>,
    pub state: BreakerState,
    /// Calls in the sliding window (while closed).
    pub window_calls: u64,
    /// Failures in the sliding window (while closed).
    pub window_failures: u64,
    /// Until the break ends, while open.
    pub retry_after_ms: Option<u64>,
    pub counters: Counters,
}

/// The breaker refused a call; try again after `retry_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open, retry after {retry_after:?}")]
pub struct Open {
    pub retry_after: Duration,
}

/// Leave to make one call; report its outcome with [`Permit::success`] or [`Permit::failure`].
/// Dropped unreported (the call was cancelled), it counts as nothing and frees a probe.
#[derive(Debug)]
#[must_use = "report the call's outcome"]
pub struct Permit {
    breaker: Breaker,
    /// Whether this is the half-open probe.
    probe: bool,
    reported: bool,
}

impl Permit {
    pub fn success(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, true);
    }

    pub fn failure(mut self) {
        self.reported = true;
        self.breaker.record(self.probe, false);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker.lock().probing = false;
        }
    }
}

/// A state change to announce once the lock is released.
type Change = Option<(BreakerState, BreakerState, String)>;

impl Breaker {
    pub fn new(service: &str, endpoint: &str, policy: BreakerPolicy, events: Events) -> Self {
        Self(Arc::new(Shared {
            service: service.into(),
            endpoint: endpoint.into(),
            policy,
            events,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                window: Window::new(policy.sampling_window),
                open_until: Instant::now(),
                probing: false,
                counters: Counters::default(),
            }),
        }))
    }

    pub fn endpoint(&self) -> &Arc<str> {
        &self.0.endpoint
    }

    /// Leave to call the endpoint, or how long until it may be called again.
    pub fn try_acquire(&self) -> Result<Permit, Open> {
        let now = Instant::now();
        let (result, change) = {
            let mut inner = self.lock();
            match inner.state {
                BreakerState::Closed => (Ok(false), None),
                BreakerState::Open if now >= inner.open_until => {
                    inner.state = BreakerState::HalfOpen;
                    inner.probing = true;
                    let change = (
                        BreakerState::Open,
                        BreakerState::HalfOpen,
                        "break over: one probe let through".to_owned(),
                    );
                    (Ok(true), Some(change))
                }
                BreakerState::HalfOpen if !inner.probing => {
                    inner.probing = true;
                    (Ok(true), None)
                }
                BreakerState::Open => {
                    inner.counters.rejected += 1;
                    let retry_after = inner.open_until - now;
                    (Err(Open { retry_after }), None)
                }
                BreakerState::HalfOpen => {
                    inner.counters.rejected += 1;
                    let retry_after = PROBE_IN_FLIGHT_RETRY;
                    (Err(Open { retry_after }), None)
                }
            }
        };
        self.announce(change);
        result.map(|probe| Permit {
            breaker: self.clone(),
            probe,
            reported: false,
        })
    }

    /// Whether a call would be let through now, without taking the leave.
    pub fn is_available(&self) -> bool {
        let inner = self.lock();
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::Open => Instant::now() >= inner.open_until,
            BreakerState::HalfOpen => !inner.probing,
        }
    }

    /// How long until this endpoint may be called again (zero when it may now).
    pub fn remaining_break(&self) -> Duration {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open => inner.open_until.saturating_duration_since(Instant::now()),
            BreakerState::HalfOpen if inner.probing => PROBE_IN_FLIGHT_RETRY,
            _ => Duration::ZERO,
        }
    }

    /// Closes the breaker and forgets the window (the demo's manual reset).
    pub fn reset(&self) {
        let change = {
            let mut inner = self.lock();
            let from = inner.state;
            inner.state = BreakerState::Closed;
            inner.probing = false;
            inner.window.clear();
            (from != BreakerState::Closed)
                .then(|| (from, BreakerState::Closed, "reset by hand".to_owned()))
        };
        self.announce(change);
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let mut inner = self.lock();
        let (calls, failures) = inner.window.totals(now);
        let retry_after_ms = (inner.state == BreakerState::Open).then(|| {
            let left = inner.open_until.saturating_duration_since(now);
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX)
        });
        BreakerSnapshot {
            service: self.0.service.clone(),
            endpoint: self.0.endpoint.clone(),
            state: inner.state,
            window_calls: calls,
            window_failures: failures,
            retry_after_ms,
            counters: inner.counters,
        }
    }

    fn record(&self, probe: bool, success: bool) {
        let now = Instant::now();
        let policy = self.0.policy;
        let change: Change = {
            let mut inner = self.lock();
            if success {
                inner.counters.successes += 1;
            } else {
                inner.counters.failures += 1;
            }
            match inner.state {
                BreakerState::HalfOpen if probe => {
                    inner.probing = false;
                    if success {
                        inner.state = BreakerState::Closed;
                        inner.window.clear();
                        Some((
                            BreakerState::HalfOpen,
                            BreakerState::Closed,
                            "probe succeeded".to_owned(),
                        ))
                    } else {
                        open(&mut inner, now, policy);
                        Some((
                            BreakerState::HalfOpen,
                            BreakerState::Open,
                            "probe failed".to_owned(),
                        ))
                    }
                }
                BreakerState::Closed => {
                    inner.window.add(now, 1, u64::from(!success));
                    // Only a failure can trip it: a success needs no totals (summed on every
                    // proxied read, they were ~2 % of its instructions, callgrind).
                    let (calls, failures) = if success {
                        (0, 0)
                    } else {
                        inner.window.totals(now)
                    };
                    let tripped = !success
                        && calls >= u64::from(policy.minimum_throughput)
                        && failures * 100 >= calls * u64::from(policy.failure_ratio_percent);
                    tripped.then(|| {
                        open(&mut inner, now, policy);
                        (
                            BreakerState::Closed,
                            BreakerState::Open,
                            format!("{failures} of {calls} calls failed"),
                        )
                    })
                }
                // A call let through before the breaker opened, finishing late: counted above,
                // decides nothing.
                _ => None,
            }
        };
        self.announce(change);
    }

    fn announce(&self, change: Change) {
        if let Some((from, to, reason)) = change {
            tracing::info!(service = %self.0.service, endpoint = %self.0.endpoint, ?from, ?to, %reason, "circuit breaker");
            self.0.events.emit(ResilienceEvent::BreakerChanged {
                service: self.0.service.clone(),
                endpoint: self.0.endpoint.clone(),
                from,
                to,
                reason,
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn open(inner: &mut Inner, now: Instant, policy: BreakerPolicy) {
    inner.state = BreakerState::Open;
    inner.open_until = now + policy.break_duration;
    inner.window.clear();
    inner.counters.opened += 1;
}

#[cfg(test)]
mod tests;
