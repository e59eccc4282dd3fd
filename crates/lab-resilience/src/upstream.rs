//! One upstream service: its endpoints (replicas) in round-robin order, each behind its own
//! breaker, and the retry budget they share.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::breaker::{Breaker, BreakerSnapshot, Permit};
use crate::budget::RetryBudget;
use crate::events::{Events, ResilienceEvent};
use crate::failure::Failure;
use crate::policy::{BreakerPolicy, BudgetPolicy};

/// A service and its replicas.
#[derive(Debug)]
pub struct Upstream {
    /// The service's name (`catalog`).
    pub service: Arc<str>,
    /// One breaker per endpoint, in configuration order.
    endpoints: Vec<Breaker>,
    /// The round-robin cursor.
    next: AtomicUsize,
    pub(crate) budget: RetryBudget,
    pub(crate) events: Events,
    /// An HTTP-level fault on every endpoint (chaos, the circuit-breaker demo).
    pub fault: crate::fault::FaultSlot,
}

impl Upstream {
    /// `urls` are the endpoints' base URLs, without a trailing slash.
    pub fn new(
        service: &str,
        urls: &[String],
        breaker: BreakerPolicy,
        budget: BudgetPolicy,
        events: Events,
    ) -> Self {
        Self {
            service: service.into(),
            endpoints: urls
                .iter()
                .map(|url| Breaker::new(service, url, breaker, events.clone()))
                .collect(),
            next: AtomicUsize::new(0),
            budget: RetryBudget::new(budget),
            events,
            fault: crate::fault::FaultSlot::default(),
        }
    }

    pub fn breakers(&self) -> &[Breaker] {
        &self.endpoints
    }

    pub fn snapshots(&self) -> Vec<BreakerSnapshot> {
        self.endpoints.iter().map(Breaker::snapshot).collect()
    }

    /// Closes every endpoint's breaker.
    pub fn reset(&self) {
        self.endpoints.iter().for_each(Breaker::reset);
    }

    /// The next endpoint in turn whose breaker lets a call through, skipping ejected ones; when
    /// all are open, the shortest remaining break.
    pub fn pick(&self) -> Result<(&Breaker, Permit), Failure> {
        let count = self.endpoints.len();
        if count == 0 {
            return Err(Failure::NoEndpoint);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut soonest = Duration::MAX;
        for offset in 0..count {
            let breaker = &self.endpoints[(start + offset) % count];
            match breaker.try_acquire() {
                Ok(permit) => {
                    if offset > 0 {
                        // Keep alternating from here, not from the ejected endpoint.
                        self.next.store(start + offset + 1, Ordering::Relaxed);
                    }
                    return Ok((breaker, permit));
                }
                Err(open) => soonest = soonest.min(open.retry_after),
            }
        }
        self.events.emit(ResilienceEvent::Rejected {
            service: self.service.clone(),
        });
        Err(Failure::Open {
            retry_after: soonest,
        })
    }
}
