//! HTTP-level faults on an upstream: an error status with a probability and added latency,
//! applied inside the call before the request leaves, to every endpoint of the service. Chaos and
//! the circuit-breaker demo use them to make a real upstream fail without touching it.
//!
//! A fault says whether it is meant to trip the breaker: one that is (the demo's "upstream
//! failing") counts against the endpoint like a real failure; one that is not (latency or errors
//! injected to watch retries and budgets) leaves the breaker's statistics alone.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The longest latency a fault may add: beyond the call's own timeouts it proves nothing more.
pub const MAX_LATENCY: Duration = Duration::from_secs(10);

/// What a fault does to each attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HttpFault {
    /// Status an affected attempt answers with (500–599); none for latency alone.
    pub status: Option<u16>,
    /// Share of attempts that fail with `status` (0–1).
    pub probability: f64,
    /// Added before each attempt, failing or not.
    pub latency_ms: u64,
    /// Whether the injected failures count against the endpoints' breakers.
    pub trips_breaker: bool,
}

/// Why a fault was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("status must be a server error (500–599), got {0}")]
    Status(u16),
    #[error("probability must be between 0 and 1")]
    Probability,
    #[error("latency must be at most {} ms", MAX_LATENCY.as_millis())]
    Latency,
    #[error("a fault needs a status or some latency")]
    Empty,
}

impl HttpFault {
    /// Checks the bounds; the one place they are decided.
    pub fn validate(&self) -> Result<(), FaultError> {
        if let Some(status) = self.status
            && !(500..=599).contains(&status)
        {
            return Err(FaultError::Status(status));
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return Err(FaultError::Probability);
        }
        if Duration::from_millis(self.latency_ms) > MAX_LATENCY {
            return Err(FaultError::Latency);
        }
        if self.status.is_none() && self.latency_ms == 0 {
            return Err(FaultError::Empty);
        }
        Ok(())
    }
}

/// A fault in force until `until`.
#[derive(Debug)]
struct Active {
    fault: HttpFault,
    until: Instant,
}

/// The fault slot of one upstream: read once per attempt without a lock.
#[derive(Debug, Default)]
pub struct FaultSlot(ArcSwapOption<Active>);

/// What the slot decided for one attempt.
pub(crate) struct Injection {
    /// Sleep this long first.
    pub latency: Duration,
    /// Then fail with this status, if set; `bool` = counts against the breaker.
    pub failure: Option<(StatusCode, bool)>,
}

impl FaultSlot {
    /// Puts `fault` in force for `ttl` (replacing any other); `fault` must be valid.
    pub fn set(&self, fault: HttpFault, ttl: Duration) -> Result<(), FaultError> {
        fault.validate()?;
        self.0.store(Some(Arc::new(Active {
            fault,
            until: Instant::now() + ttl,
        })));
        Ok(())
    }

    /// Lifts the fault.
    pub fn clear(&self) {
        self.0.store(None);
    }

    /// The fault in force and its time left.
    pub fn current(&self) -> Option<(HttpFault, Duration)> {
        let active = self.0.load_full()?;
        let left = active.until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| (active.fault.clone(), left))
    }

    /// The attempt's fate; `None` when no fault is in force (the usual, cheap case).
    pub(crate) fn roll(&self) -> Option<Injection> {
        let guard = self.0.load();
        let active = guard.as_ref()?;
        if Instant::now() >= active.until {
            return None;
        }
        let fault = &active.fault;
        let failure = fault
            .status
            .filter(|_| rand::random::<f64>() < fault.probability)
            .and_then(|s| StatusCode::from_u16(s).ok())
            .map(|s| (s, fault.trips_breaker));
        Some(Injection {
            latency: Duration::from_millis(fault.latency_ms),
            failure,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failing() -> HttpFault {
        HttpFault {
            status: Some(503),
            probability: 1.0,
            latency_ms: 0,
            trips_breaker: true,
        }
    }

    #[test]
    fn out_of_bounds_faults_are_refused() {
        let bad = [
            HttpFault {
                status: Some(404),
                ..failing()
            },
            HttpFault {
                probability: 1.5,
                ..failing()
            },
            HttpFault {
                probability: f64::NAN,
                ..failing()
            },
            HttpFault {
                latency_ms: 10_001,
                ..failing()
            },
            HttpFault {
                status: None,
                ..failing()
            },
        ];
        for fault in bad {
            assert!(fault.validate().is_err(), "{fault:?}");
        }
        assert_eq!(failing().validate(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fault_fails_every_attempt_until_it_expires() {
        let slot = FaultSlot::default();
        slot.set(failing(), Duration::from_secs(5)).unwrap();

        let during = slot.roll().and_then(|i| i.failure);
        tokio::time::advance(Duration::from_secs(6)).await;
        let after = slot.roll();

        assert_eq!(during, Some((StatusCode::SERVICE_UNAVAILABLE, true)));
        assert!(after.is_none());
        assert!(slot.current().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn probability_zero_adds_latency_but_never_fails() {
        let slot = FaultSlot::default();
        let fault = HttpFault {
            probability: 0.0,
            latency_ms: 250,
            ..failing()
        };
        slot.set(fault, Duration::from_secs(5)).unwrap();

        let injection = slot.roll().unwrap();

        assert_eq!(injection.latency, Duration::from_millis(250));
        assert!(injection.failure.is_none());
    }
}
