//! Moving a payment forward and telling the saga, once. Both the command handlers and the
//! webhooks come through here: the state machine ([`PaymentState::advance`]) decides whether an
//! observation moves the payment, and each step it takes names its saga event. Nothing here
//! touches the database: the caller writes the payment and the events with [`store::finish`],
//! in its transaction and one statement, which emits each event at most once per order.

use lab_contracts::{
    Money, PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured, PaymentDeclined,
    PaymentRefunded, PaymentSessionFailed, PaymentVoided,
};
use lab_messaging::Envelope;

use crate::metrics::PaymentsMetrics;
use crate::state::PaymentState;
use crate::store::{self, Payment, StateColumn, StoreError};

/// What a provider told us along with a state: amounts and the ids it assigned.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The amount of this step (authorized, captured or refunded), when the provider said.
    pub amount: Option<Money>,
    /// Stripe payment intent.
    pub intent_id: Option<String>,
    /// PayPal authorization.
    pub authorization_id: Option<String>,
    /// PayPal capture.
    pub capture_id: Option<String>,
    /// Refund at either provider.
    pub refund_id: Option<String>,
    /// Why (declines, failures, voids).
    pub reason: Option<String>,
}

/// How an observation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The payment moved through these states.
    Applied(Vec<PaymentState>),
    /// The state was already passed (or cannot follow): recorded, nothing changed.
    Ignored,
}

impl Outcome {
    /// The history's word for it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Applied(_) => "applied",
            Self::Ignored => "ignored",
        }
    }
}

/// Fills ids the payment does not know yet (a late event still teaches us its ids).
fn learn_ids(p: &mut Payment, o: &Observed) {
    fn fill(slot: &mut Option<String>, value: &Option<String>) {
        if slot.is_none() {
            slot.clone_from(value);
        }
    }
    fill(&mut p.intent_id, &o.intent_id);
    fill(&mut p.authorization_id, &o.authorization_id);
    fill(&mut p.capture_id, &o.capture_id);
    fill(&mut p.refund_id, &o.refund_id);
}

/// The session's amount, or zero in no currency for a tombstone (which never gets here).
fn session_amount(p: &Payment) -> Money {
    Money {
        amount_minor: p.amount_minor.unwrap_or(0),
        currency: p.currency.clone().unwrap_or_default(),
    }
}

/// Moves `p` to `to` if that is forward (in memory) and returns the saga event of every step
/// taken, for the caller to write with the payment ([`store::finish`]). The payment is to be
/// saved either way: even a late event may teach it ids.
pub fn advance(
    p: &mut Payment,
    to: PaymentState,
    observed: &Observed,
    cause: Option<&Envelope>,
    metrics: &PaymentsMetrics,
) -> Result<(Outcome, Vec<Envelope>), StoreError> {
    learn_ids(p, observed);
    let Some(steps) = p.state().advance(to) else {
        return Ok((Outcome::Ignored, Vec::new()));
    };
    let order_id = p.order_id;
    let mut events = Vec::with_capacity(steps.len());
    for step in &steps {
        // The provider's amount belongs to the target step; a skipped step takes the amount
        // the step after it carried (a capture implies the same authorization).
        let amount = observed.amount.clone().unwrap_or_else(|| session_amount(p));
        let event = match step {
            PaymentState::Authorized => {
                let expected = session_amount(p);
                if amount != expected {
                    p.amount_mismatch = true;
                    metrics.amount_mismatch.inc();
                    tracing::warn!(%order_id, ?expected, actual = ?amount,
                        "authorization differs from the session; the saga will review it");
                }
                p.authorized_minor = Some(amount.amount_minor);
                p.authorized_currency = Some(amount.currency.clone());
                Some(store::event(
                    order_id,
                    &PaymentAuthorized { order_id, amount },
                    cause,
                )?)
            }
            PaymentState::Captured => {
                p.captured_minor = Some(amount.amount_minor);
                Some(store::event(
                    order_id,
                    &PaymentCaptured { order_id, amount },
                    cause,
                )?)
            }
            PaymentState::Refunded => {
                p.refunded_minor = Some(amount.amount_minor);
                Some(store::event(
                    order_id,
                    &PaymentRefunded { order_id, amount },
                    cause,
                )?)
            }
            PaymentState::Declined | PaymentState::Expired => {
                let reason = observed.reason.clone().unwrap_or_else(|| {
                    if *step == PaymentState::Expired {
                        "expired".into()
                    } else {
                        "declined".into()
                    }
                });
                p.reason = Some(reason.clone());
                Some(store::event(
                    order_id,
                    &PaymentDeclined { order_id, reason },
                    cause,
                )?)
            }
            PaymentState::Voided => {
                p.reason.clone_from(&observed.reason);
                Some(store::event(order_id, &PaymentVoided { order_id }, cause)?)
            }
            PaymentState::Failed => {
                let reason = observed.reason.clone().unwrap_or_else(|| "failed".into());
                p.reason = Some(reason.clone());
                Some(store::event(
                    order_id,
                    &PaymentSessionFailed { order_id, reason },
                    cause,
                )?)
            }
            PaymentState::SessionCreated => None,
        };
        events.extend(event);
        p.state = StateColumn(*step);
    }
    Ok((Outcome::Applied(steps), events))
}

/// A capture the provider refused: the payment stays authorized (it can still be voided) and the
/// saga is to hear `PaymentCaptureFailed`, once (the event returned, for [`store::finish`]).
/// `None` when the payment is not authorized: nothing to change.
pub fn capture_failed(
    p: &mut Payment,
    reason: String,
    cause: Option<&Envelope>,
) -> Result<Option<Envelope>, StoreError> {
    if p.state() != PaymentState::Authorized {
        return Ok(None);
    }
    let order_id = p.order_id;
    p.reason = Some(reason.clone());
    let event = PaymentCaptureFailed { order_id, reason };
    store::event(order_id, &event, cause).map(Some)
}
