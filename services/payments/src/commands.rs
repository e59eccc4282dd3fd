//! The payments side of the checkout saga over RabbitMQ: `CreatePaymentSession`,
//! `CapturePayment`, `VoidPayment` and `RefundPayment` in; the payment events out.
//!
//! Each command runs in the consumer's transaction (inbox row, payment row locked, outbox rows),
//! and calls the provider with an idempotency key derived from the order and the operation, so a
//! redelivery or a retry after a crash is answered by the provider's first answer. A command
//! whose effect already happened changes nothing and emits nothing new; a transient provider
//! failure is a handler error, which sends the command through the retry queues.

use lab_contracts::{
    CapturePayment, CreatePaymentSession, Message, PaymentSessionCreated, RefundPayment,
    VoidPayment,
};
use lab_messaging::{AmqpSettings, Broker, Envelope, Handler, HandlerError, MessagingMetrics};
use serde::de::DeserializeOwned;
use serde_json::json;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::PaymentsMetrics;
use crate::provider::{Done, ProviderError, Providers, SessionRequest};
use crate::state::PaymentState;
use crate::store::{self, Payment, StoreError};
use crate::transitions::{self, Observed, Outcome};

/// Starts the outbox relay and the command consumer; both run until `shutdown`.
pub fn start(
    pool: &sqlx::PgPool,
    broker: &Broker,
    settings: &AmqpSettings,
    messaging: MessagingMetrics,
    handler: PaymentCommands,
    shutdown: &CancellationToken,
) {
    lab_messaging::start_service(
        crate::NAME,
        pool,
        broker,
        settings,
        lab_contracts::all_subscriptions(),
        handler,
        messaging,
        shutdown,
    );
}

/// The commands this service consumes (its queue's bindings, from lab-contracts' table).
pub fn routing_keys() -> Vec<String> {
    lab_contracts::subscribed(crate::NAME)
}

/// Applies payment commands.
pub struct PaymentCommands {
    /// The providers sessions are opened at.
    pub providers: Providers,
    /// Amount mismatches and friends.
    pub metrics: PaymentsMetrics,
}

/// Why a command could not be applied now.
#[derive(Debug, thiserror::Error)]
enum CommandError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error("{0}")]
    Payload(String),
}

impl From<CommandError> for HandlerError {
    fn from(e: CommandError) -> Self {
        HandlerError::new(e.to_string())
    }
}

fn payload<T: DeserializeOwned>(message: &Envelope) -> Result<T, CommandError> {
    serde_json::from_value(message.payload.clone())
        .map_err(|e| CommandError::Payload(format!("{} payload: {e}", message.kind)))
}

impl Handler for PaymentCommands {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        let result = match message.kind.as_str() {
            CreatePaymentSession::NAME => self.create(tx, message).await,
            CapturePayment::NAME => self.capture(tx, message).await,
            VoidPayment::NAME => {
                let command: VoidPayment = payload(message)?;
                self.cancel(tx, command.order_id, "VoidPayment", message)
                    .await
            }
            RefundPayment::NAME => {
                let command: RefundPayment = payload(message)?;
                self.cancel(tx, command.order_id, "RefundPayment", message)
                    .await
            }
            // Bound only to the keys above; anything else is a topology mistake, not a retry.
            other => {
                tracing::warn!(kind = other, "ignoring a message payments does not handle");
                Ok(())
            }
        };
        Ok(result?)
    }
}

impl PaymentCommands {
    async fn create(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), CommandError> {
        let command: CreatePaymentSession = payload(message)?;
        let order_id = command.order_id;
        let kind = "CreatePaymentSession";
        if let Some(existing) = store::lock(tx, order_id).await? {
            // A repeat (the session exists) or a tombstone (voided first): either way nothing
            // is opened. The tombstone answers PaymentSessionFailed once.
            if existing.state() == PaymentState::Voided && existing.session_id.is_none() {
                let event = lab_contracts::PaymentSessionFailed {
                    order_id,
                    reason: "the payment was voided before its session was created".into(),
                };
                let sent = store::emit_once(tx, order_id, &event, Some(message)).await?;
                let outcome = if sent { "refused_voided" } else { "ignored" };
                store::record_command(tx, order_id, kind, outcome, &json!({})).await?;
            } else {
                store::record_command(tx, order_id, kind, "ignored", &json!({})).await?;
            }
            return Ok(());
        }
        let Some(provider) = self.providers.get(&command.provider) else {
            return self
                .session_failed(
                    tx,
                    &command,
                    format!("unknown provider `{}`", command.provider),
                    message,
                )
                .await;
        };
        let currency = command.amount.currency.to_ascii_uppercase();
        let request = SessionRequest {
            order_id,
            amount: lab_contracts::Money {
                amount_minor: command.amount.amount_minor,
                currency: currency.clone(),
            },
            expires_at: command.expires_at.timestamp(),
        };
        let mut payment = store::insert_opening(
            tx,
            &store::NewSession {
                order_id,
                provider: provider.name(),
                amount_minor: command.amount.amount_minor,
                currency: &currency,
            },
        )
        .await?;
        let session = match provider.create_session(&request).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(%order_id, %reason, "payment session refused");
                let observed = Observed {
                    reason: Some(reason.clone()),
                    ..Observed::default()
                };
                transitions::advance(
                    tx,
                    &mut payment,
                    PaymentState::Failed,
                    &observed,
                    Some(message),
                    &self.metrics,
                )
                .await?;
                store::record_command(tx, order_id, kind, "failed", &json!({"reason": reason}))
                    .await?;
                return Ok(());
            }
        };
        store::set_session(
            tx,
            order_id,
            &session.session_id,
            &session.payment_url,
            session.intent_id.as_deref(),
        )
        .await?;
        let event = PaymentSessionCreated {
            order_id,
            provider: provider.name().to_owned(),
            session_id: session.session_id.clone(),
            payment_url: session.payment_url.clone(),
        };
        store::emit_once(tx, order_id, &event, Some(message)).await?;
        store::record_command(
            tx,
            order_id,
            kind,
            "applied",
            &json!({"session_id": session.session_id, "intent_id": session.intent_id}),
        )
        .await?;
        Ok(())
    }

    async fn session_failed(
        &self,
        tx: &mut PgConnection,
        command: &CreatePaymentSession,
        reason: String,
        message: &Envelope,
    ) -> Result<(), CommandError> {
        tracing::warn!(order_id = %command.order_id, %reason, "payment session refused");
        let order_id = command.order_id;
        store::insert_ended(
            tx,
            order_id,
            Some(&command.provider),
            PaymentState::Failed,
            &reason,
        )
        .await?;
        let event = lab_contracts::PaymentSessionFailed {
            order_id,
            reason: reason.clone(),
        };
        store::emit_once(tx, order_id, &event, Some(message)).await?;
        store::record_command(
            tx,
            order_id,
            "CreatePaymentSession",
            "failed",
            &json!({"reason": reason}),
        )
        .await?;
        Ok(())
    }

    async fn capture(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), CommandError> {
        let command: CapturePayment = payload(message)?;
        let order_id = command.order_id;
        let kind = "CapturePayment";
        let Some(mut payment) = store::lock(tx, order_id).await? else {
            let event = lab_contracts::PaymentCaptureFailed {
                order_id,
                reason: "no payment for this order".into(),
            };
            store::emit_once(tx, order_id, &event, Some(message)).await?;
            return Ok(());
        };
        if payment.state() != PaymentState::Authorized {
            let outcome = if payment.state() == PaymentState::SessionCreated {
                // Authorized at the provider but its webhook is not here yet: try again soon.
                return Err(CommandError::Payload(format!(
                    "payment {order_id} is not authorized yet"
                )));
            } else {
                "ignored"
            };
            store::record_command(
                tx,
                order_id,
                kind,
                outcome,
                &json!({"state": payment.state()}),
            )
            .await?;
            return Ok(());
        }
        let provider = self.provider_of(&payment)?;
        let amount = lab_contracts::Money {
            amount_minor: command.amount.amount_minor,
            currency: command.amount.currency.to_ascii_uppercase(),
        };
        match provider.capture(&payment, &amount).await {
            Ok(done) => {
                let observed = Observed {
                    capture_id: (provider.name() == "paypal").then_some(done.id).flatten(),
                    amount: done.amount.or(Some(amount)),
                    ..Observed::default()
                };
                let outcome = transitions::advance(
                    tx,
                    &mut payment,
                    PaymentState::Captured,
                    &observed,
                    Some(message),
                    &self.metrics,
                )
                .await?;
                store::record_command(tx, order_id, kind, outcome.as_str(), &json!({})).await?;
            }
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                let reason = e.to_string();
                transitions::capture_failed(tx, &mut payment, reason.clone(), Some(message))
                    .await?;
                store::record_command(tx, order_id, kind, "refused", &json!({"reason": reason}))
                    .await?;
            }
        }
        Ok(())
    }

    /// VoidPayment and RefundPayment: whatever stage the payment reached, undo it — expire an
    /// open session, void an authorization, refund a capture — or leave a tombstone when there
    /// is no payment yet, so a later CreatePaymentSession opens nothing.
    async fn cancel(
        &self,
        tx: &mut PgConnection,
        order_id: Uuid,
        kind: &str,
        message: &Envelope,
    ) -> Result<(), CommandError> {
        let Some(mut payment) = store::lock(tx, order_id).await? else {
            store::insert_ended(
                tx,
                order_id,
                None,
                PaymentState::Voided,
                "voided before its session",
            )
            .await?;
            let event = lab_contracts::PaymentVoided { order_id };
            store::emit_once(tx, order_id, &event, Some(message)).await?;
            store::record_command(tx, order_id, kind, "tombstone", &json!({})).await?;
            return Ok(());
        };
        let state = payment.state();
        if state.is_terminal() {
            store::record_command(tx, order_id, kind, "ignored", &json!({"state": state})).await?;
            return Ok(());
        }
        let provider = self.provider_of(&payment)?;
        let (target, done): (PaymentState, Done) = match state {
            PaymentState::SessionCreated | PaymentState::Authorized => {
                (PaymentState::Voided, provider.void(&payment).await?)
            }
            PaymentState::Captured => (PaymentState::Refunded, provider.refund(&payment).await?),
            _ => unreachable_state(state)?,
        };
        let observed = Observed {
            refund_id: (target == PaymentState::Refunded)
                .then_some(done.id)
                .flatten(),
            amount: done.amount.or_else(|| {
                payment.captured_minor.map(|minor| lab_contracts::Money {
                    amount_minor: minor,
                    currency: payment.currency.clone().unwrap_or_default(),
                })
            }),
            reason: Some(format!("{kind} from the saga")),
            ..Observed::default()
        };
        let outcome: Outcome = transitions::advance(
            tx,
            &mut payment,
            target,
            &observed,
            Some(message),
            &self.metrics,
        )
        .await?;
        store::record_command(
            tx,
            order_id,
            kind,
            outcome.as_str(),
            &json!({"from": state}),
        )
        .await?;
        Ok(())
    }

    fn provider_of(
        &self,
        payment: &Payment,
    ) -> Result<&dyn crate::provider::Provider, CommandError> {
        let name = payment.provider.as_deref().unwrap_or_default();
        self.providers
            .get(name)
            .ok_or_else(|| CommandError::Payload(format!("no provider `{name}` is configured")))
    }
}

/// The states `cancel` handles are exhaustive; this keeps the match total without a panic.
fn unreachable_state(state: PaymentState) -> Result<(PaymentState, Done), CommandError> {
    Err(CommandError::Payload(format!(
        "cannot cancel a payment in state {}",
        state.as_str()
    )))
}
