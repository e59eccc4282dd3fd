//! What a service plugs into a [`Consumer`](crate::Consumer): a [`Handler`] that applies one
//! message inside the delivery's transaction, and the [`HandlerError`] that sends it to a retry.
//!
//! ```ignore
//! struct ReserveStock;
//!
//! impl Handler for ReserveStock {
//!     async fn handle(&self, tx: &mut PgConnection, msg: &Envelope) -> Result<(), HandlerError> {
//!         let order: ReserveStockCommand = serde_json::from_value(msg.payload.clone())
//!             .map_err(HandlerError::new)?;
//!         stock::reserve(&mut *tx, &order).await?;
//!         outbox::enqueue(tx, &Envelope::caused_by("catalog.stock-reserved", json!({ "order_id": order.order_id }), msg)).await?;
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;

use sqlx::PgConnection;

use crate::{Envelope, MessagingError};

/// Why a handler could not apply a message; rolled back and retried, then dead-lettered.
#[derive(Debug)]
pub struct HandlerError(String);

impl HandlerError {
    /// An error with this description (it ends up in the headers and the dead letters).
    pub fn new(reason: impl fmt::Display) -> Self {
        Self(reason.to_string())
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HandlerError {}

impl From<sqlx::Error> for HandlerError {
    fn from(e: sqlx::Error) -> Self {
        Self::new(e)
    }
}

impl From<MessagingError> for HandlerError {
    fn from(e: MessagingError) -> Self {
        Self::new(e)
    }
}

/// What a service does with one message, inside the delivery's transaction.
pub trait Handler: Send + Sync + 'static {
    /// Applies `message` using `tx` (the state change, and any [`crate::outbox::enqueue`]).
    fn handle(
        &self,
        tx: &mut PgConnection,
        message: &Envelope,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether `message` may share a transaction with messages of other flows. The consumer
    /// applies what a lane has waiting in one transaction (one commit for all); a handler whose
    /// effects lock rows that other flows lock too (catalog's inventory) says no, since two
    /// lanes' batches could then take those locks in opposite orders and deadlock.
    fn batchable(&self, message: &Envelope) -> bool {
        let _ = message;
        true
    }
}
