//! The saga's commands as lab-contracts messages in the outbox: each [`Command`] becomes the
//! message its receiver consumes (with the order's lines, amount, provider, payment expiry), and
//! every applied step is announced to orders as a `SagaTransitioned`. All are caused by the
//! message (or deadline) that triggered the step, so they share its correlation id and trace.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lab_contracts::{
    CapturePayment, CommitStock, CreatePaymentSession, Message, Money, OrderLine, RefundPayment,
    ReleaseStock, ReserveStock, SagaTransitioned, VoidPayment,
};
use lab_messaging::Envelope;
use serde::Serialize;
use uuid::Uuid;

use crate::orchestrator::StepError;
use crate::saga::{Command, State};

/// What the commands of one order carry besides its id.
pub struct Order<'a> {
    pub order_id: Uuid,
    /// Sent with `ReserveStock`.
    pub lines: &'a [OrderLine],
    /// The PSP the customer chose, for `CreatePaymentSession`.
    pub provider: &'a str,
    /// What payments must authorize and capture.
    pub total: &'a Money,
}

/// One applied step, as orders is told of it.
pub struct Step<'a> {
    /// The state before (empty when the saga starts).
    pub from: &'a str,
    pub to: State,
    /// The saga event's name, or `OrderPlaced`.
    pub event: &'a str,
}

/// Every command as its lab-contracts message, then the step's `SagaTransitioned` for orders, all
/// caused by `cause`, in the order they are to be published (the orchestrator writes them to the
/// outbox in the step's one statement); a payment session expires `payment_window` from now.
pub fn messages(
    order: &Order<'_>,
    step: Step<'_>,
    commands: &[Command],
    cause: &Envelope,
    payment_window: Duration,
) -> Result<Vec<Envelope>, StepError> {
    let (order_id, total) = (order.order_id, order.total);
    let mut out = Vec::with_capacity(commands.len() + 1);
    for command in commands {
        let message = match command {
            Command::ReserveStock => {
                let lines = order.lines.to_vec();
                message(&ReserveStock { order_id, lines }, cause)?
            }
            Command::CommitStock => message(&CommitStock { order_id }, cause)?,
            Command::ReleaseStock => message(&ReleaseStock { order_id }, cause)?,
            Command::CreatePaymentSession => {
                let expires_at: DateTime<Utc> = Utc::now()
                    + chrono::Duration::from_std(payment_window)
                        .map_err(|_| StepError::Deadline(payment_window))?;
                let session = CreatePaymentSession {
                    order_id,
                    amount: total.clone(),
                    provider: order.provider.to_owned(),
                    expires_at,
                };
                message(&session, cause)?
            }
            Command::CapturePayment => {
                let capture = CapturePayment {
                    order_id,
                    amount: total.clone(),
                };
                message(&capture, cause)?
            }
            Command::VoidPayment => message(&VoidPayment { order_id }, cause)?,
            Command::RefundPayment { reason } => {
                let refund = RefundPayment {
                    order_id,
                    reason: reason.clone(),
                };
                message(&refund, cause)?
            }
        };
        out.push(message);
    }
    out.push(message(&transitioned(order_id, step, commands), cause)?);
    Ok(out)
}

/// Tells orders where the saga is.
fn transitioned(order_id: Uuid, step: Step<'_>, commands: &[Command]) -> SagaTransitioned {
    SagaTransitioned {
        order_id,
        from: step.from.to_owned(),
        to: step.to.as_str().to_owned(),
        event: step.event.to_owned(),
        terminal: step.to.is_terminal(),
        compensations: commands
            .iter()
            .filter(|c| c.is_compensation())
            .map(|c| c.name().to_owned())
            .collect(),
    }
}

fn message<T: Message + Serialize>(message: &T, cause: &Envelope) -> Result<Envelope, StepError> {
    let payload = serde_json::to_value(message)?;
    Ok(Envelope::caused_by(T::NAME, payload, cause))
}
