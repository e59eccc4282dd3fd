//! Moving a payment forward and telling the saga, once. Both the command handlers and the
//! webhooks come through here: the state machine ([`PaymentState::advance`]) decides whether an
//! observation moves the payment, and each step it takes emits its saga event at most once
//! ([`store::emit_once`]), in the caller's transaction.

use lab_contracts::{
    Money, PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured, PaymentDeclined,
    PaymentRefunded, PaymentSessionFailed, PaymentVoided,
};
use lab_messaging::Envelope;
use sqlx::PgConnection;

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

/// Moves `p` to `to` if that is forward, saves it and emits the saga event of every step taken.
pub async fn advance(
    conn: &mut PgConnection,
    p: &mut Payment,
    to: PaymentState,
    observed: &Observed,
    cause: Option<&Envelope>,
    metrics: &PaymentsMetrics,
) -> Result<Outcome, StoreError> {
    learn_ids(p, observed);
    let Some(steps) = p.state().advance(to) else {
        store::save(conn, p).await?;
        return Ok(Outcome::Ignored);
    };
    let order_id = p.order_id;
    for step in &steps {
        // The provider's amount belongs to the target step; a skipped step takes the amount
        // the step after it carried (a capture implies the same authorization).
        let amount = observed.amount.clone().unwrap_or_else(|| session_amount(p));
        match step {
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
                store::emit_once(
                    conn,
                    order_id,
                    &PaymentAuthorized { order_id, amount },
                    cause,
                )
                .await?;
            }
            PaymentState::Captured => {
                p.captured_minor = Some(amount.amount_minor);
                store::emit_once(conn, order_id, &PaymentCaptured { order_id, amount }, cause)
                    .await?;
            }
            PaymentState::Refunded => {
                p.refunded_minor = Some(amount.amount_minor);
                store::emit_once(conn, order_id, &PaymentRefunded { order_id, amount }, cause)
                    .await?;
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
                store::emit_once(conn, order_id, &PaymentDeclined { order_id, reason }, cause)
                    .await?;
            }
            PaymentState::Voided => {
                p.reason.clone_from(&observed.reason);
                store::emit_once(conn, order_id, &PaymentVoided { order_id }, cause).await?;
            }
            PaymentState::Failed => {
                let reason = observed.reason.clone().unwrap_or_else(|| "failed".into());
                p.reason = Some(reason.clone());
                store::emit_once(
                    conn,
                    order_id,
                    &PaymentSessionFailed { order_id, reason },
                    cause,
                )
                .await?;
            }
            PaymentState::SessionCreated => {}
        }
        p.state = StateColumn(*step);
    }
    store::save(conn, p).await?;
    Ok(Outcome::Applied(steps))
}

/// A capture the provider refused: the payment stays authorized (it can still be voided) and the
/// saga hears `PaymentCaptureFailed` once.
pub async fn capture_failed(
    conn: &mut PgConnection,
    p: &mut Payment,
    reason: String,
    cause: Option<&Envelope>,
) -> Result<Outcome, StoreError> {
    if p.state() != PaymentState::Authorized {
        return Ok(Outcome::Ignored);
    }
    let order_id = p.order_id;
    p.reason = Some(reason.clone());
    store::save(conn, p).await?;
    let event = PaymentCaptureFailed { order_id, reason };
    Ok(if store::emit_once(conn, order_id, &event, cause).await? {
        Outcome::Applied(vec![])
    } else {
        Outcome::Ignored
    })
}
