//! What the resilience stack tells the outside: typed events on a broadcast channel (for the live
//! push stream) and the state each breaker reports in a snapshot.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for a slow subscriber before it starts missing some; the push stream is a view,
/// a lagging page loses old events rather than slowing a request.
const EVENT_BUFFER: usize = 256;

/// A breaker's state, as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls fail fast until the break ends.
    Open,
    /// The break is over; one probe decides between closed and open.
    HalfOpen,
}

/// One thing that happened in an outbound client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResilienceEvent {
    /// An endpoint's breaker changed state.
    BreakerChanged {
        service: Arc<str>,
        endpoint: Arc<str>,
        from: BreakerState,
        to: BreakerState,
        /// Why, for a person: the ratio that opened it, the probe's outcome, a manual reset.
        reason: String,
    },
    /// A failed attempt is being tried again.
    Retried {
        service: Arc<str>,
        endpoint: Arc<str>,
        /// The attempt that failed (1 = the first).
        attempt: u32,
    },
    /// A retry was wanted but the upstream's budget had none left.
    BudgetExhausted { service: Arc<str> },
    /// Every endpoint of a service was open: the call failed fast.
    Rejected { service: Arc<str> },
}

/// The sending side, cloned into every breaker and client; sending with no subscriber is free.
#[derive(Debug, Clone)]
pub struct Events(broadcast::Sender<ResilienceEvent>);

impl Default for Events {
    fn default() -> Self {
        Self(broadcast::channel(EVENT_BUFFER).0)
    }
}

impl Events {
    pub fn subscribe(&self) -> broadcast::Receiver<ResilienceEvent> {
        self.0.subscribe()
    }

    pub(crate) fn emit(&self, event: ResilienceEvent) {
        tracing::debug!(?event, "resilience event");
        // No subscriber is the usual case, not an error.
        let _ = self.0.send(event);
    }
}
