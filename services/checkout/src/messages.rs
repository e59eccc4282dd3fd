//! The orchestrator's messaging: `OrderPlaced` and every catalog and payments event the saga
//! reacts to come in through the consumer (inbox row and saga step in one transaction, so a
//! redelivery changes nothing); commands and `SagaTransitioned` go out through the outbox relay.

use std::sync::Arc;

use lab_contracts::{
    Message, OrderPlaced, PaymentAuthorized, PaymentCaptureFailed, PaymentCaptured,
    PaymentDeclined, PaymentSessionCreated, PaymentSessionFailed, StockCommitted,
    StockReservationFailed, StockReserved,
};
use lab_messaging::{AmqpSettings, Broker, Envelope, Handler, HandlerError, MessagingMetrics};
use lab_telemetry::Metrics;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::metrics::SagaMetrics;
use crate::orchestrator::{self, Outcome};
use crate::saga::{Event, Timeouts};

/// Starts the outbox relay and the event consumer; both run until `shutdown` (their tasks are
/// tracked inside lab-messaging and stop with the token).
pub fn start(
    pool: &sqlx::PgPool,
    broker: &Broker,
    settings: &AmqpSettings,
    metrics: &Metrics,
    saga_metrics: SagaMetrics,
    timeouts: Timeouts,
    shutdown: &CancellationToken,
) {
    let messaging = MessagingMetrics::register(metrics);
    lab_messaging::start_service(
        crate::NAME,
        pool,
        broker,
        settings,
        lab_contracts::all_subscriptions(),
        SagaEvents {
            timeouts: Arc::new(timeouts),
            metrics: saga_metrics,
        },
        messaging,
        shutdown,
    );
}

/// What this service consumes (its queue's bindings): the order that starts a saga and every
/// reply the saga reacts to.
pub fn routing_keys() -> Vec<String> {
    lab_contracts::subscribed(crate::NAME)
}

/// Applies saga events.
pub struct SagaEvents {
    /// The deadline of each waiting state.
    timeouts: Arc<Timeouts>,
    /// Steps applied and ignored.
    metrics: SagaMetrics,
}

fn payload<T: DeserializeOwned>(message: &Envelope) -> Result<T, HandlerError> {
    serde_json::from_value(message.payload.clone())
        .map_err(|e| HandlerError::new(format!("{} payload: {e}", message.kind)))
}

/// The saga event a message stands for, with its order; `None` for a kind the saga ignores.
pub fn event_of(message: &Envelope) -> Result<Option<(Uuid, Event)>, HandlerError> {
    let event = match message.kind.as_str() {
        StockReserved::NAME => {
            let e: StockReserved = payload(message)?;
            (e.order_id, Event::StockReserved)
        }
        StockReservationFailed::NAME => {
            let e: StockReservationFailed = payload(message)?;
            (
                e.order_id,
                Event::StockReservationFailed { reason: e.reason },
            )
        }
        StockCommitted::NAME => {
            let e: StockCommitted = payload(message)?;
            (e.order_id, Event::StockCommitted)
        }
        PaymentSessionCreated::NAME => {
            let e: PaymentSessionCreated = payload(message)?;
            (e.order_id, Event::PaymentSessionCreated)
        }
        PaymentSessionFailed::NAME => {
            let e: PaymentSessionFailed = payload(message)?;
            (e.order_id, Event::PaymentSessionFailed { reason: e.reason })
        }
        PaymentAuthorized::NAME => {
            let e: PaymentAuthorized = payload(message)?;
            (e.order_id, Event::PaymentAuthorized { amount: e.amount })
        }
        PaymentDeclined::NAME => {
            let e: PaymentDeclined = payload(message)?;
            (e.order_id, Event::PaymentDeclined { reason: e.reason })
        }
        PaymentCaptured::NAME => {
            let e: PaymentCaptured = payload(message)?;
            (e.order_id, Event::PaymentCaptured { amount: e.amount })
        }
        PaymentCaptureFailed::NAME => {
            let e: PaymentCaptureFailed = payload(message)?;
            (e.order_id, Event::PaymentCaptureFailed { reason: e.reason })
        }
        _ => return Ok(None),
    };
    Ok(Some(event))
}

impl Handler for SagaEvents {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        let outcome = if message.kind == OrderPlaced::NAME {
            let placed: OrderPlaced = payload(message)?;
            let outcome = orchestrator::start(tx, &placed, message, &self.timeouts)
                .await
                .map_err(HandlerError::new)?;
            (placed.order_id, outcome)
        } else if let Some((order_id, event)) = event_of(message)? {
            let outcome = orchestrator::apply(tx, order_id, &event, message, &self.timeouts)
                .await
                .map_err(HandlerError::new)?;
            (order_id, outcome)
        } else {
            // Bound only to the keys above; anything else is a topology mistake, not a retry.
            tracing::warn!(kind = %message.kind, "ignoring a message checkout does not handle");
            return Ok(());
        };
        // Counted before commit: a step rolled back by a failed commit is counted again when
        // redelivered, which a rate over minutes does not notice.
        self.metrics.observe(&outcome.1);
        log(message, outcome);
        Ok(())
    }
}

fn log(message: &Envelope, (order_id, outcome): (Uuid, Outcome)) {
    match outcome {
        Outcome::Applied { from, to } => tracing::info!(%order_id, kind = %message.kind,
            from = from.as_str(), to = to.as_str(), "saga step"),
        Outcome::Ignored(why) => tracing::info!(%order_id, kind = %message.kind, why,
            "saga event recorded and ignored"),
        // Nothing to record it against: a reply for an order this service never started.
        Outcome::UnknownSaga => tracing::warn!(%order_id, kind = %message.kind,
            message_id = %message.message_id, "event for an unknown saga ignored"),
    }
}
