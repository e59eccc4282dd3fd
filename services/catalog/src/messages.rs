//! The catalog's side of the checkout saga over RabbitMQ: `ReserveStock`, `CommitStock` and
//! `ReleaseStock` in, `StockReserved`/`StockReservationFailed`, `StockCommitted` and
//! `StockReleased` out. Each command is applied in the consumer's transaction together with its
//! inbox row and the reply's outbox row, so a redelivered command changes nothing and its reply
//! is sent exactly once in effect; the stock functions are idempotent per order besides.

use lab_contracts::{
    CommitStock, Message, ReleaseStock, ReserveStock, ShortLine, StockCommitted, StockReleased,
    StockReservationFailed, StockReserved,
};
use lab_messaging::{
    AmqpSettings, Broker, Envelope, Handler, HandlerError, MessagingMetrics, outbox,
};
use lab_telemetry::Metrics;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::stock::{self, Line, ReserveOutcome};

/// Starts the outbox relay and the command consumer; both run until `shutdown` (their tasks are
/// tracked inside lab-messaging and stop with the token).
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
        StockCommands,
        messaging,
        shutdown,
    );
}

/// The commands this service consumes (its queue's bindings).
pub fn routing_keys() -> Vec<String> {
    lab_contracts::subscribed(crate::NAME)
}

/// Applies stock commands.
pub struct StockCommands;

fn payload<T: DeserializeOwned>(message: &Envelope) -> Result<T, HandlerError> {
    serde_json::from_value(message.payload.clone())
        .map_err(|e| HandlerError::new(format!("{} payload: {e}", message.kind)))
}

async fn reply<T: Message + Serialize>(
    tx: &mut PgConnection,
    event: &T,
    cause: &Envelope,
) -> Result<(), HandlerError> {
    let value = serde_json::to_value(event).map_err(HandlerError::new)?;
    outbox::enqueue(tx, &Envelope::caused_by(T::NAME, value, cause)).await?;
    Ok(())
}

impl Handler for StockCommands {
    /// Every stock command locks inventory rows that other orders' commands lock too: two
    /// lanes applying batches could take the same products in opposite orders and deadlock, so
    /// each command is applied in its own transaction (locks held for one order at a time).
    fn batchable(&self, _message: &Envelope) -> bool {
        false
    }

    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        match message.kind.as_str() {
            ReserveStock::NAME => {
                let command: ReserveStock = payload(message)?;
                let lines: Vec<Line> = command
                    .lines
                    .iter()
                    .map(|l| Line {
                        product_id: l.product_id,
                        quantity: l.quantity,
                    })
                    .collect();
                match stock::reserve_in(tx, command.order_id, &lines).await? {
                    ReserveOutcome::Reserved { .. } => {
                        reply(
                            tx,
                            &StockReserved {
                                order_id: command.order_id,
                            },
                            message,
                        )
                        .await
                    }
                    ReserveOutcome::Refused { reason, short } => {
                        let short = short
                            .into_iter()
                            .map(|s| ShortLine {
                                product_id: s.product_id,
                                requested: s.requested,
                                available: s.available,
                            })
                            .collect();
                        let event = StockReservationFailed {
                            order_id: command.order_id,
                            reason,
                            short,
                        };
                        reply(tx, &event, message).await
                    }
                }
            }
            CommitStock::NAME => {
                let command: CommitStock = payload(message)?;
                stock::commit_in(tx, command.order_id).await?;
                reply(
                    tx,
                    &StockCommitted {
                        order_id: command.order_id,
                    },
                    message,
                )
                .await
            }
            ReleaseStock::NAME => {
                let command: ReleaseStock = payload(message)?;
                stock::release_in(tx, command.order_id).await?;
                reply(
                    tx,
                    &StockReleased {
                        order_id: command.order_id,
                    },
                    message,
                )
                .await
            }
            // Bound only to the keys above; anything else is a topology mistake, not a retry.
            other => {
                tracing::warn!(
                    kind = other,
                    "ignoring a message the catalog does not handle"
                );
                Ok(())
            }
        }
    }
}
