//! The payments side of the checkout saga over RabbitMQ: `CreatePaymentSession`,
//! `CapturePayment`, `VoidPayment` and `RefundPayment` in; the payment events out.
//!
//! Each command runs in the consumer's transaction (inbox row, payment row locked, outbox rows):
//! one statement locks (or opens) the payment, one writes what the command decided
//! ([`store::finish`]) and one its outbox rows. It calls the provider with an idempotency key
//! derived from the order and the operation, so a redelivery or a retry after a crash is
//! answered by the provider's first answer. A command
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
use crate::store::{self, CommandLine, Fresh, Locked, Payment, StoreError, Writes};
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
        let provider = self.providers.get(&command.provider);
        let currency = command.amount.currency.to_ascii_uppercase();
        let unknown = format!("unknown provider `{}`", command.provider);
        // The row is claimed before the provider is called, so a concurrent void or webhook
        // waits for this transaction (and then finds the session) instead of leaving a
        // tombstone behind a session being opened, or missing it. At a provider this service
        // does not know, the row is the failed payment itself.
        let fresh = match provider {
            Some(p) => Fresh {
                provider: Some(p.name()),
                state: PaymentState::SessionCreated,
                amount_minor: Some(command.amount.amount_minor),
                currency: Some(&currency),
                reason: None,
            },
            None => Fresh {
                provider: Some(&command.provider),
                state: PaymentState::Failed,
                amount_minor: None,
                currency: None,
                reason: Some(&unknown),
            },
        };
        let Locked {
            mut payment,
            inserted,
        } = store::lock_or_insert(tx, order_id, &fresh).await?;
        if !inserted {
            // A repeat (the session exists) or a tombstone (voided first): either way nothing
            // is opened. The tombstone answers PaymentSessionFailed once.
            let outcome = if payment.state() == PaymentState::Voided && payment.session_id.is_none()
            {
                let event = lab_contracts::PaymentSessionFailed {
                    order_id,
                    reason: "the payment was voided before its session was created".into(),
                };
                let sent = store::emit_once(tx, order_id, &event, Some(message)).await?;
                if sent { "refused_voided" } else { "ignored" }
            } else {
                "ignored"
            };
            record(tx, order_id, kind, outcome, json!({})).await?;
            return Ok(());
        }
        let Some(provider) = provider else {
            tracing::warn!(%order_id, reason = %unknown, "payment session refused");
            let event = lab_contracts::PaymentSessionFailed {
                order_id,
                reason: unknown.clone(),
            };
            let writes = Writes {
                events: vec![store::event(order_id, &event, Some(message))?],
                command: Some(CommandLine {
                    kind,
                    outcome: "failed",
                    detail: json!({"reason": unknown}),
                }),
                ..Writes::default()
            };
            store::finish(tx, order_id, writes).await?;
            return Ok(());
        };
        let request = SessionRequest {
            order_id,
            amount: lab_contracts::Money {
                amount_minor: command.amount.amount_minor,
                currency,
            },
            expires_at: command.expires_at.timestamp(),
        };
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
                let (_, events) = transitions::advance(
                    &mut payment,
                    PaymentState::Failed,
                    &observed,
                    Some(message),
                    &self.metrics,
                )?;
                let writes = Writes {
                    save: Some(&payment),
                    events,
                    command: Some(CommandLine {
                        kind,
                        outcome: "failed",
                        detail: json!({"reason": reason}),
                    }),
                    webhook: None,
                };
                store::finish(tx, order_id, writes).await?;
                return Ok(());
            }
        };
        payment.session_id = Some(session.session_id.clone());
        payment.payment_url = Some(session.payment_url.clone());
        payment.intent_id.clone_from(&session.intent_id);
        let event = PaymentSessionCreated {
            order_id,
            provider: provider.name().to_owned(),
            session_id: session.session_id.clone(),
            payment_url: session.payment_url.clone(),
        };
        let writes = Writes {
            save: Some(&payment),
            events: vec![store::event(order_id, &event, Some(message))?],
            command: Some(CommandLine {
                kind,
                outcome: "applied",
                detail: json!({"session_id": session.session_id, "intent_id": session.intent_id}),
            }),
            webhook: None,
        };
        store::finish(tx, order_id, writes).await?;
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
            if payment.state() == PaymentState::SessionCreated {
                // Authorized at the provider but its webhook is not here yet: try again soon.
                return Err(CommandError::Payload(format!(
                    "payment {order_id} is not authorized yet"
                )));
            }
            let detail = json!({"state": payment.state()});
            record(tx, order_id, kind, "ignored", detail).await?;
            return Ok(());
        }
        let provider = self.provider_of(&payment)?;
        let amount = lab_contracts::Money {
            amount_minor: command.amount.amount_minor,
            currency: command.amount.currency.to_ascii_uppercase(),
        };
        let (outcome, events, detail) = match provider.capture(&payment, &amount).await {
            Ok(done) => {
                let observed = Observed {
                    capture_id: (provider.name() == "paypal").then_some(done.id).flatten(),
                    amount: done.amount.or(Some(amount)),
                    ..Observed::default()
                };
                let (outcome, events) = transitions::advance(
                    &mut payment,
                    PaymentState::Captured,
                    &observed,
                    Some(message),
                    &self.metrics,
                )?;
                (outcome.as_str(), events, json!({}))
            }
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                let reason = e.to_string();
                let event =
                    transitions::capture_failed(&mut payment, reason.clone(), Some(message))?;
                (
                    "refused",
                    event.into_iter().collect(),
                    json!({"reason": reason}),
                )
            }
        };
        let writes = Writes {
            save: Some(&payment),
            events,
            command: Some(CommandLine {
                kind,
                outcome,
                detail,
            }),
            webhook: None,
        };
        store::finish(tx, order_id, writes).await?;
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
        let tombstone = Fresh {
            provider: None,
            state: PaymentState::Voided,
            amount_minor: None,
            currency: None,
            reason: Some("voided before its session"),
        };
        let Locked {
            mut payment,
            inserted,
        } = store::lock_or_insert(tx, order_id, &tombstone).await?;
        if inserted {
            let event = lab_contracts::PaymentVoided { order_id };
            let writes = Writes {
                events: vec![store::event(order_id, &event, Some(message))?],
                command: Some(CommandLine {
                    kind,
                    outcome: "tombstone",
                    detail: json!({}),
                }),
                ..Writes::default()
            };
            store::finish(tx, order_id, writes).await?;
            return Ok(());
        }
        let state = payment.state();
        if state.is_terminal() {
            record(tx, order_id, kind, "ignored", json!({"state": state})).await?;
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
        let (outcome, events): (Outcome, _) = transitions::advance(
            &mut payment,
            target,
            &observed,
            Some(message),
            &self.metrics,
        )?;
        let writes = Writes {
            save: Some(&payment),
            events,
            command: Some(CommandLine {
                kind,
                outcome: outcome.as_str(),
                detail: json!({"from": state}),
            }),
            webhook: None,
        };
        store::finish(tx, order_id, writes).await?;
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

/// Records what a command did when it wrote nothing else.
async fn record(
    tx: &mut PgConnection,
    order_id: Uuid,
    kind: &str,
    outcome: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    let writes = Writes {
        command: Some(CommandLine {
            kind,
            outcome,
            detail,
        }),
        ..Writes::default()
    };
    store::finish(tx, order_id, writes).await.map(drop)
}

/// The states `cancel` handles are exhaustive; this keeps the match total without a panic.
fn unreachable_state(state: PaymentState) -> Result<(PaymentState, Done), CommandError> {
    Err(CommandError::Payload(format!(
        "cannot cancel a payment in state {}",
        state.as_str()
    )))
}
