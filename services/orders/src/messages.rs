//! Orders over RabbitMQ: `OrderPlaced` out through the outbox (written by `orders::place`), and
//! the checkout saga's `SagaTransitioned` in. Each transition is recorded in `order_history`
//! (keyed by its message id) in the consumer's transaction with its inbox row; a terminal one
//! sets the order's final status, once: the update only matches a `Pending` order, so a late or
//! duplicate transition is recorded and changes nothing. The check that the order exists, the
//! history row and the final status are one statement: one round trip per transition.

use lab_contracts::{Message, SagaTransitioned};
use lab_messaging::{AmqpSettings, Broker, Envelope, Handler, HandlerError, MessagingMetrics};
use lab_telemetry::Metrics;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::domain::OrderStatus;

/// Starts the outbox relay and the saga-event consumer; both run until `shutdown` (their tasks
/// are tracked inside lab-messaging and stop with the token).
pub fn start(
    pool: &sqlx::PgPool,
    broker: &Broker,
    settings: &AmqpSettings,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) {
    let messaging = MessagingMetrics::register(metrics);
    lab_messaging::start_service(
        crate::NAME,
        pool,
        broker,
        settings,
        lab_contracts::all_subscriptions(),
        SagaEvents,
        messaging,
        shutdown,
    );
}

/// The events this service consumes (its queue's bindings).
pub fn routing_keys() -> Vec<String> {
    lab_contracts::subscribed(crate::NAME)
}

/// Follows each order's saga.
pub struct SagaEvents;

impl Handler for SagaEvents {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        if message.kind != SagaTransitioned::NAME {
            // Bound only to the key above; anything else is a topology mistake, not a retry.
            tracing::warn!(
                kind = message.kind,
                "ignoring a message orders does not handle"
            );
            return Ok(());
        }
        let t: SagaTransitioned = serde_json::from_value(message.payload.clone())
            .map_err(|e| HandlerError::new(format!("{} payload: {e}", message.kind)))?;
        record(tx, &t, message).await
    }
}

async fn record(
    tx: &mut PgConnection,
    t: &SagaTransitioned,
    message: &Envelope,
) -> Result<(), HandlerError> {
    let final_status =
        if t.terminal {
            // A terminal state orders cannot name is a contract mismatch: dead-letter it, visibly.
            Some(OrderStatus::terminal(&t.to).ok_or_else(|| {
                HandlerError::new(format!("unknown terminal saga state {:?}", t.to))
            })?)
        } else {
            None
        };
    // One round trip: the history row is written only for an order this service holds (the
    // `SELECT … FROM known` yields no row otherwise), and a terminal transition finishes the
    // order in the same statement, matching only a `Pending` one.
    let (known, finished): (bool, bool) = sqlx::query_as(
        "WITH known AS (SELECT id FROM orders WHERE id = $1), \
              recorded AS ( \
                  INSERT INTO order_history \
                      (order_id, message_id, from_state, to_state, event, terminal, compensations, \
                       occurred_at) \
                  SELECT id, $2, $3, $4, $5, $6, $7, $8 FROM known \
                  ON CONFLICT (message_id) DO NOTHING), \
              finished AS ( \
                  UPDATE orders SET status = $9, finished_at = $8 \
                  WHERE id = $1 AND status = 'Pending' AND $9::text IS NOT NULL \
                  RETURNING id) \
         SELECT EXISTS (SELECT 1 FROM known), EXISTS (SELECT 1 FROM finished)",
    )
    .bind(t.order_id)
    .bind(message.message_id)
    .bind(&t.from)
    .bind(&t.to)
    .bind(&t.event)
    .bind(t.terminal)
    .bind(&t.compensations)
    .bind(message.occurred_at)
    .bind(final_status.map(|s| s.as_str()))
    .fetch_one(&mut *tx)
    .await?;
    if !known {
        // Sagas start from this service's own OrderPlaced, so this is another environment's
        // order (a shared broker) or a deleted one: nothing here to follow.
        tracing::warn!(order_id = %t.order_id, to = t.to, "saga transition for an unknown order");
    } else if finished && let Some(status) = final_status {
        tracing::info!(order_id = %t.order_id, status = status.as_str(), "order finished");
    }
    Ok(())
}
