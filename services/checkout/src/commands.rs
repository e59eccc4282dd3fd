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
use lab_messaging::{Envelope, outbox};
use serde::Serialize;
use sqlx::PgConnection;
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

/// Enqueues every command as its lab-contracts message, caused by `cause`; a payment session
/// expires `payment_window` from now.
pub async fn send(
    tx: &mut PgConnection,
    order: &Order<'_>,
    commands: &[Command],
    cause: &Envelope,
    payment_window: Duration,
) -> Result<(), StepError> {
    let (order_id, total) = (order.order_id, order.total);
    for command in commands {
        match command {
            Command::ReserveStock => {
                let lines = order.lines.to_vec();
                enqueue(tx, &ReserveStock { order_id, lines }, cause).await?;
            }
            Command::CommitStock => enqueue(tx, &CommitStock { order_id }, cause).await?,
            Command::ReleaseStock => enqueue(tx, &ReleaseStock { order_id }, cause).await?,
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
                enqueue(tx, &session, cause).await?;
            }
            Command::CapturePayment => {
                let capture = CapturePayment {
                    order_id,
                    amount: total.clone(),
                };
                enqueue(tx, &capture, cause).await?;
            }
            Command::VoidPayment => enqueue(tx, &VoidPayment { order_id }, cause).await?,
            Command::RefundPayment { reason } => {
                let refund = RefundPayment {
                    order_id,
                    reason: reason.clone(),
                };
                enqueue(tx, &refund, cause).await?;
            }
        }
    }
    Ok(())
}

/// Tells orders where the saga is (`from` is empty when it starts).
pub async fn announce(
    tx: &mut PgConnection,
    order_id: Uuid,
    from: &str,
    to: State,
    event: &str,
    commands: &[Command],
    cause: &Envelope,
) -> Result<(), StepError> {
    let transitioned = SagaTransitioned {
        order_id,
        from: from.to_owned(),
        to: to.as_str().to_owned(),
        event: event.to_owned(),
        terminal: to.is_terminal(),
        compensations: commands
            .iter()
            .filter(|c| c.is_compensation())
            .map(|c| c.name().to_owned())
            .collect(),
    };
    enqueue(tx, &transitioned, cause).await
}

async fn enqueue<T: Message + Serialize>(
    tx: &mut PgConnection,
    message: &T,
    cause: &Envelope,
) -> Result<(), StepError> {
    let payload = serde_json::to_value(message)?;
    outbox::enqueue(tx, &Envelope::caused_by(T::NAME, payload, cause)).await?;
    Ok(())
}
