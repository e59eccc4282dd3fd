//! The defaults, each with where it comes from and why it is scaled the way it is.
//!
//! The sources: Polly's standard resilience pipeline (.NET `AddStandardResilienceHandler`:
//! total 30 s, attempt 10 s, 3 retries from 2 s exponential with jitter, breaker at 10 % failures
//! over 30 s with at least 100 calls, broken 5 s), Envoy's retry policy (back-off base 25 ms,
//! ceiling 10 × base) and linkerd's retry budget (20 % extra load, at least 10 retries/s, 10 s
//! window). Lab's upstreams are on loopback, answer in milliseconds and see demo-sized traffic,
//! so every window is smaller than the sources' and every threshold is reachable by a visitor.

use std::time::Duration;

/// How one logical call is bounded and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallPolicy {
    /// One attempt, up to the response's headers. Polly: 10 s; a loopback service answers in
    /// milliseconds, so 2 s means a stuck process, not a slow one.
    pub attempt_timeout: Duration,
    /// The whole call, retries and back-offs included. Polly: 30 s; 5 s keeps a visitor's click
    /// from hanging while still leaving room for two retries after a timed-out attempt.
    pub total_timeout: Duration,
    /// Retries after the first attempt. Polly: 3, Envoy: 1; 2 crosses to the other catalog
    /// replica and back once without tripling the load of an outage.
    pub max_retries: u32,
    /// First back-off, doubled per retry, fully jittered. Envoy's default 25 ms: loopback
    /// recovers (a replica restart, a reconnect) in tens of milliseconds.
    pub backoff_base: Duration,
    /// Back-off ceiling. Envoy: 10 × base = 250 ms.
    pub backoff_max: Duration,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(5),
            max_retries: 2,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }
}

impl CallPolicy {
    /// The same policy with other timeouts (a route whose work is legitimately long).
    pub fn with_timeouts(self, attempt: Duration, total: Duration) -> Self {
        Self {
            attempt_timeout: attempt,
            total_timeout: total,
            ..self
        }
    }
}

/// When an endpoint's breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Failures over calls in the window that open the breaker. Polly: 10 % over 100 calls; on
    /// demo traffic 10 % is one unlucky request, half means the endpoint is really failing.
    pub failure_ratio_percent: u32,
    /// Calls the window must hold before the ratio counts. Polly: 100; 5 is what a visitor
    /// produces in a few clicks, and still more than one stray error.
    pub minimum_throughput: u32,
    /// How far back calls are counted. Polly: 30 s; 10 s so a healed endpoint's old failures
    /// stop counting quickly.
    pub sampling_window: Duration,
    /// Open before one probe is let through. Polly's 5 s: long enough to see on the page, short
    /// enough that a restarted replica is back almost at once.
    pub break_duration: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_ratio_percent: 50,
            minimum_throughput: 5,
            sampling_window: Duration::from_secs(10),
            break_duration: Duration::from_secs(5),
        }
    }
}

/// How many retries an upstream may take on top of its first attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetPolicy {
    /// Retries as a share of first attempts in the window: linkerd's 20 %, so an outage costs at
    /// most 1.2 × the normal load.
    pub retry_percent: u32,
    /// Retries per second always allowed, so a quiet upstream can still be retried: linkerd's 10.
    pub min_retries_per_second: u32,
    /// How long deposits count: linkerd's 10 s.
    pub window: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        Self {
            retry_percent: 20,
            min_retries_per_second: 10,
            window: Duration::from_secs(10),
        }
    }
}
