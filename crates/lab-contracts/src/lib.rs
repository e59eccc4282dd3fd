//! What crosses a service boundary in Lab: every event and command of the checkout saga, declared
//! once as a type with its routing name (`<owner>.<name>`), so producers and consumers cannot
//! drift apart on a string.
//!
//! Commands are named for what the receiver should do (`checkout.reserve-stock`: checkout asks
//! catalog); events for what happened (`catalog.stock-reserved`). The owner prefix is the
//! sending service, so a routing key says who spoke.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub mod live;

/// A message type with its routing key.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// The event or command name, also the AMQP routing key.
    const NAME: &'static str;
}

macro_rules! message {
    ($ty:ident, $name:literal) => {
        impl Message for $ty {
            const NAME: &'static str = $name;
        }
    };
}

/// One line of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub product_id: Uuid,
    pub quantity: i32,
    /// Unit price in minor units, snapshotted when the order was placed.
    pub unit_price_minor: i64,
}

/// Money in minor units with its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: String,
}

// ---- orders → checkout ----

/// An order was accepted: the saga starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
    /// Which PSP the customer chose: `stripe` or `paypal`.
    pub provider: String,
    /// A payment window of its own (seconds), instead of checkout's: only the BFF's payment-expiry
    /// demo asks for one (2–30 s), and orders takes it only with the `demo` scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_window_s: Option<u32>,
}
message!(OrderPlaced, "orders.order-placed");

// ---- checkout → catalog ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStock {
    pub order_id: Uuid,
    pub lines: Vec<OrderLine>,
}
message!(ReserveStock, "checkout.reserve-stock");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStock {
    pub order_id: Uuid,
}
message!(CommitStock, "checkout.commit-stock");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: Uuid,
}
message!(ReleaseStock, "checkout.release-stock");

// ---- catalog → checkout ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    pub order_id: Uuid,
}
message!(StockReserved, "catalog.stock-reserved");

/// A line that could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLine {
    pub product_id: Uuid,
    pub requested: i32,
    pub available: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReservationFailed {
    pub order_id: Uuid,
    pub reason: String,
    pub short: Vec<ShortLine>,
}
message!(StockReservationFailed, "catalog.stock-reservation-failed");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    pub order_id: Uuid,
}
message!(StockCommitted, "catalog.stock-committed");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    pub order_id: Uuid,
}
message!(StockReleased, "catalog.stock-released");

// ---- checkout → payments ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePaymentSession {
    pub order_id: Uuid,
    pub amount: Money,
    pub provider: String,
    /// When the session must be paid by.
    pub expires_at: DateTime<Utc>,
}
message!(CreatePaymentSession, "checkout.create-payment-session");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapturePayment {
    pub order_id: Uuid,
    pub amount: Money,
}
message!(CapturePayment, "checkout.capture-payment");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoidPayment {
    pub order_id: Uuid,
}
message!(VoidPayment, "checkout.void-payment");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPayment {
    pub order_id: Uuid,
    pub reason: String,
}
message!(RefundPayment, "checkout.refund-payment");

// ---- payments → checkout ----

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSessionCreated {
    pub order_id: Uuid,
    pub provider: String,
    pub session_id: String,
    /// Where the customer pays (the PSP's hosted page).
    pub payment_url: String,
}
message!(PaymentSessionCreated, "payments.session-created");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSessionFailed {
    pub order_id: Uuid,
    pub reason: String,
}
message!(PaymentSessionFailed, "payments.session-failed");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentAuthorized {
    pub order_id: Uuid,
    pub amount: Money,
}
message!(PaymentAuthorized, "payments.authorized");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    pub order_id: Uuid,
    pub reason: String,
}
message!(PaymentDeclined, "payments.declined");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    pub order_id: Uuid,
    pub amount: Money,
}
message!(PaymentCaptured, "payments.captured");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptureFailed {
    pub order_id: Uuid,
    pub reason: String,
}
message!(PaymentCaptureFailed, "payments.capture-failed");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentVoided {
    pub order_id: Uuid,
}
message!(PaymentVoided, "payments.voided");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub order_id: Uuid,
    pub amount: Money,
}
message!(PaymentRefunded, "payments.refunded");

// ---- checkout → orders ----

/// The saga moved; orders mirrors the state and, when terminal, the order's final state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SagaTransitioned {
    pub order_id: Uuid,
    /// The state before; empty for the step that started the saga. Equal to `to` when a
    /// finished saga only issued commands (a late payment refunded, late stock released).
    pub from: String,
    pub to: String,
    pub event: String,
    /// Whether `to` is final.
    pub terminal: bool,
    /// Compensations issued on this step (`ReleaseStock`, `VoidPayment`, `RefundPayment`).
    pub compensations: Vec<String>,
}
message!(SagaTransitioned, "checkout.saga-transitioned");

// ---- who consumes what ----

/// One consuming service and the messages its queue is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Subscription {
    /// The consuming service (its queue is `lab.<service>`).
    pub service: &'static str,
    /// The routing keys its queue is bound to.
    pub messages: &'static [&'static str],
}

/// Every service's queue bindings in one table. Consumers bind from it, and producers declare
/// their consumers' queues from it before their first publish: a topic exchange drops a message
/// no queue is bound to yet, so on a first boot where the producer starts first the message would
/// otherwise be lost.
pub const SUBSCRIPTIONS: &[Subscription] = &[
    Subscription {
        service: "catalog",
        messages: &[ReserveStock::NAME, CommitStock::NAME, ReleaseStock::NAME],
    },
    Subscription {
        service: "checkout",
        messages: &[
            OrderPlaced::NAME,
            StockReserved::NAME,
            StockReservationFailed::NAME,
            StockCommitted::NAME,
            PaymentSessionCreated::NAME,
            PaymentSessionFailed::NAME,
            PaymentAuthorized::NAME,
            PaymentDeclined::NAME,
            PaymentCaptured::NAME,
            PaymentCaptureFailed::NAME,
        ],
    },
    Subscription {
        service: "orders",
        messages: &[SagaTransitioned::NAME],
    },
    Subscription {
        service: "payments",
        messages: &[
            CreatePaymentSession::NAME,
            CapturePayment::NAME,
            VoidPayment::NAME,
            RefundPayment::NAME,
        ],
    },
];

/// The routing keys `service`'s queue is bound to; empty for a service that consumes nothing.
pub fn subscribed(service: &str) -> Vec<String> {
    SUBSCRIPTIONS
        .iter()
        .filter(|s| s.service == service)
        .flat_map(|s| s.messages.iter().map(|m| (*m).to_owned()))
        .collect()
}

/// The services whose queues `message` goes to.
pub fn consumers_of(message: &str) -> Vec<&'static str> {
    SUBSCRIPTIONS
        .iter()
        .filter(|s| s.messages.contains(&message))
        .map(|s| s.service)
        .collect()
}

/// Every subscription as owned `(service, routing keys)` pairs, the shape the relay declares.
pub fn all_subscriptions() -> Vec<(String, Vec<String>)> {
    SUBSCRIPTIONS
        .iter()
        .map(|s| (s.service.to_owned(), subscribed(s.service)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_exactly_one_consuming_service() {
        for command in [
            ReserveStock::NAME,
            CommitStock::NAME,
            ReleaseStock::NAME,
            CreatePaymentSession::NAME,
            CapturePayment::NAME,
            VoidPayment::NAME,
            RefundPayment::NAME,
        ] {
            let consumers = SUBSCRIPTIONS
                .iter()
                .filter(|s| s.messages.contains(&command))
                .count();
            assert_eq!(consumers, 1, "{command}");
        }
    }

    #[test]
    fn a_service_that_consumes_nothing_has_no_bindings() {
        assert!(subscribed("bff").is_empty());
        assert_eq!(
            subscribed("orders"),
            vec![SagaTransitioned::NAME.to_owned()]
        );
    }
}
