//! The place-order saga as one pure function: `(saga, event) → decision`, with no I/O and no
//! clock, so every path — success, each failure, each compensation, late, duplicate and
//! out-of-order events — is a table row that a property test can drive at random.
//!
//! ```text
//! Initiated ─stock reserved→ StockReserved ─session created→ PaymentSessionCreated
//!   │ no stock: Rejected        │ session failed/timeout:       │ declined/expired: release, void → Cancelled
//!   │ timeout: release→Cancelled│   release, void → Cancelled   │ authorized (amount ≠ total): refund, release → RequiresReview
//!                                                               ▼ authorized
//!                       Completed ←stock committed─ Captured ←captured─ PaymentAuthorized
//!                                                    (≠ total: refund, release → RequiresReview)
//!                                                               │ capture failed/timeout: void, release → Cancelled
//! ```
//! Terminal states absorb everything; money that arrives after the saga gave up (a late
//! authorization or capture) is refunded once, stock reserved late is released.

use std::time::Duration;

use lab_contracts::Money;
use serde::{Deserialize, Serialize};

/// Where a saga is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum State {
    Initiated,
    StockReserved,
    PaymentSessionCreated,
    PaymentAuthorized,
    Captured,
    Completed,
    Rejected,
    Cancelled,
    RequiresReview,
}

impl State {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Rejected | Self::Cancelled | Self::RequiresReview
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initiated => "Initiated",
            Self::StockReserved => "StockReserved",
            Self::PaymentSessionCreated => "PaymentSessionCreated",
            Self::PaymentAuthorized => "PaymentAuthorized",
            Self::Captured => "Captured",
            Self::Completed => "Completed",
            Self::Rejected => "Rejected",
            Self::Cancelled => "Cancelled",
            Self::RequiresReview => "RequiresReview",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        ALL_STATES.into_iter().find(|st| st.as_str() == s)
    }
}

pub const ALL_STATES: [State; 9] = [
    State::Initiated,
    State::StockReserved,
    State::PaymentSessionCreated,
    State::PaymentAuthorized,
    State::Captured,
    State::Completed,
    State::Rejected,
    State::Cancelled,
    State::RequiresReview,
];

/// Everything the machine remembers besides its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saga {
    pub state: State,
    /// What the customer must pay; authorizations and captures are checked against it.
    pub total: Money,
    /// A refund was already issued: late money is refunded once, not once per message.
    pub refund_issued: bool,
    /// How many times `CommitStock` was re-issued after its step timed out.
    pub commit_retries: u8,
}

/// What reaches the saga.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    StockReserved,
    StockReservationFailed {
        reason: String,
    },
    StockCommitted,
    PaymentSessionCreated,
    PaymentSessionFailed {
        reason: String,
    },
    PaymentAuthorized {
        amount: Money,
    },
    PaymentDeclined {
        reason: String,
    },
    PaymentCaptured {
        amount: Money,
    },
    PaymentCaptureFailed {
        reason: String,
    },
    /// The deadline set when the saga entered `state` passed.
    Timeout {
        state: State,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Self::StockReserved => "StockReserved",
            Self::StockReservationFailed { .. } => "StockReservationFailed",
            Self::StockCommitted => "StockCommitted",
            Self::PaymentSessionCreated => "PaymentSessionCreated",
            Self::PaymentSessionFailed { .. } => "PaymentSessionFailed",
            Self::PaymentAuthorized { .. } => "PaymentAuthorized",
            Self::PaymentDeclined { .. } => "PaymentDeclined",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
            Self::PaymentCaptureFailed { .. } => "PaymentCaptureFailed",
            Self::Timeout { .. } => "Timeout",
        }
    }
}

/// What the saga asks other services to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    ReserveStock,
    CommitStock,
    ReleaseStock,
    CreatePaymentSession,
    CapturePayment,
    VoidPayment,
    RefundPayment { reason: String },
}

impl Command {
    /// Whether the command undoes an earlier step.
    pub fn is_compensation(&self) -> bool {
        matches!(
            self,
            Self::ReleaseStock | Self::VoidPayment | Self::RefundPayment { .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::ReserveStock => "ReserveStock",
            Self::CommitStock => "CommitStock",
            Self::ReleaseStock => "ReleaseStock",
            Self::CreatePaymentSession => "CreatePaymentSession",
            Self::CapturePayment => "CapturePayment",
            Self::VoidPayment => "VoidPayment",
            Self::RefundPayment { .. } => "RefundPayment",
        }
    }
}

/// How long each waiting state may last; the payment window is the customer's time to pay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub reserve: Duration,
    pub session: Duration,
    pub payment: Duration,
    pub capture: Duration,
    pub commit: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            // Stock, sessions, captures and commits are single calls to local services: a minute
            // covers retries through every retry queue (1 + 5 + 25 s).
            reserve: Duration::from_secs(60),
            session: Duration::from_secs(60),
            // Stripe Checkout's shortest session lifetime is 30 min; 15 keeps the demo moving.
            payment: Duration::from_secs(15 * 60),
            capture: Duration::from_secs(60),
            commit: Duration::from_secs(60),
        }
    }
}

impl Timeouts {
    /// These timeouts with an order's own payment window, when it asked for one (the demo).
    pub fn with_payment_window(&self, window: Option<Duration>) -> Self {
        Self {
            payment: window.unwrap_or(self.payment),
            ..*self
        }
    }

    /// The deadline a saga gets on entering `state`; none for terminal states.
    pub fn for_state(&self, state: State) -> Option<Duration> {
        match state {
            State::Initiated => Some(self.reserve),
            State::StockReserved => Some(self.session),
            State::PaymentSessionCreated => Some(self.payment),
            State::PaymentAuthorized => Some(self.capture),
            State::Captured => Some(self.commit),
            _ => None,
        }
    }
}

/// `CommitStock` is re-issued this often before a captured order goes to a person.
pub const MAX_COMMIT_RETRIES: u8 = 3;

/// The outcome of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub saga: Saga,
    pub commands: Vec<Command>,
    /// `Some(reason)` when the event changed nothing (late, duplicate, out of order).
    pub ignored: Option<&'static str>,
    /// Whether the state's deadline restarts (a re-issued step), even without a state change.
    pub rearm: bool,
}

/// A new saga for an order: reserve its stock first.
pub fn start(total: Money) -> (Saga, Vec<Command>) {
    let saga = Saga {
        state: State::Initiated,
        total,
        refund_issued: false,
        commit_retries: 0,
    };
    (saga, vec![Command::ReserveStock])
}

/// The whole machine.
pub fn decide(saga: &Saga, event: &Event) -> Decision {
    use Command::*;
    use State::*;
    let to = |state: State, commands: Vec<Command>| Decision {
        saga: Saga {
            state,
            ..saga.clone()
        },
        commands,
        ignored: None,
        rearm: false,
    };
    let ignore = |why: &'static str| Decision {
        saga: saga.clone(),
        commands: vec![],
        ignored: Some(why),
        rearm: false,
    };
    let refund_once = |reason: &str| {
        if saga.refund_issued {
            ignore("late payment already refunded")
        } else {
            Decision {
                saga: Saga {
                    refund_issued: true,
                    ..saga.clone()
                },
                commands: vec![RefundPayment {
                    reason: reason.into(),
                }],
                ignored: None,
                rearm: false,
            }
        }
    };
    let review = |reason: &str| Decision {
        saga: Saga {
            state: RequiresReview,
            refund_issued: true,
            ..saga.clone()
        },
        commands: vec![
            RefundPayment {
                reason: reason.into(),
            },
            ReleaseStock,
        ],
        ignored: None,
        rearm: false,
    };

    match (saga.state, event) {
        (s, Event::Timeout { state }) if *state != s => {
            ignore("stale deadline: the saga has moved on")
        }

        (Initiated, Event::StockReserved) => to(StockReserved, vec![CreatePaymentSession]),
        (Initiated, Event::StockReservationFailed { .. }) => to(Rejected, vec![]),
        // The reservation may have happened with its answer lost: release is idempotent.
        (Initiated, Event::Timeout { .. }) => to(Cancelled, vec![ReleaseStock]),

        (StockReserved, Event::PaymentSessionCreated) => to(PaymentSessionCreated, vec![]),
        (StockReserved, Event::PaymentSessionFailed { .. }) => to(Cancelled, vec![ReleaseStock]),
        (StockReserved, Event::Timeout { .. }) => to(Cancelled, vec![ReleaseStock, VoidPayment]),

        (PaymentSessionCreated, Event::PaymentAuthorized { amount }) if *amount == saga.total => {
            to(PaymentAuthorized, vec![CapturePayment])
        }
        (PaymentSessionCreated, Event::PaymentAuthorized { .. }) => {
            review("authorized amount differs from the order total")
        }
        (PaymentSessionCreated, Event::PaymentDeclined { .. }) => {
            to(Cancelled, vec![ReleaseStock, VoidPayment])
        }
        // The payment window closed: the customer never paid.
        (PaymentSessionCreated, Event::Timeout { .. }) => {
            to(Cancelled, vec![ReleaseStock, VoidPayment])
        }
        // A capture overtaking its authorization (providers that capture at once).
        (PaymentSessionCreated | PaymentAuthorized, Event::PaymentCaptured { amount })
            if *amount == saga.total =>
        {
            to(Captured, vec![CommitStock])
        }
        (PaymentSessionCreated | PaymentAuthorized, Event::PaymentCaptured { .. }) => {
            review("captured amount differs from the order total")
        }

        (PaymentAuthorized, Event::PaymentCaptureFailed { .. }) => {
            to(Cancelled, vec![VoidPayment, ReleaseStock])
        }
        (PaymentAuthorized, Event::Timeout { .. }) => {
            to(Cancelled, vec![VoidPayment, ReleaseStock])
        }

        (Captured, Event::StockCommitted) => to(Completed, vec![]),
        (Captured, Event::Timeout { .. }) if saga.commit_retries < MAX_COMMIT_RETRIES => Decision {
            saga: Saga {
                commit_retries: saga.commit_retries + 1,
                ..saga.clone()
            },
            commands: vec![CommitStock],
            ignored: None,
            rearm: true,
        },
        // Paid, but the stock will not commit: a person must decide, nothing is undone blindly.
        (Captured, Event::Timeout { .. }) => to(RequiresReview, vec![]),

        // Money after the saga gave up is returned, once.
        (Cancelled | Rejected, Event::PaymentAuthorized { .. }) => {
            refund_once("authorization arrived after the order was cancelled")
        }
        (Cancelled | Rejected, Event::PaymentCaptured { .. }) => {
            refund_once("capture arrived after the order was cancelled")
        }
        // Stock reserved after the saga gave up goes back (catalog also refuses a reserve that
        // its release overtook).
        (Cancelled | Rejected, Event::StockReserved) => to(saga.state, vec![ReleaseStock]),

        (s, _) if s.is_terminal() => ignore("the saga is finished"),
        _ => ignore("not expected in this state (duplicate or out of order)"),
    }
}

#[cfg(test)]
mod tests;
