//! The payment providers behind one trait: [`stripe::Stripe`] and [`paypal::PayPal`] are ordinary
//! clients of each provider's HTTP API, pointed at the sandbox PSP by their base URL.
//!
//! Every call carries an idempotency key derived from the order id and the operation
//! ([`idempotency_key`]), so a retry — of the HTTP attempt here, or of the whole command by the
//! consumer — is answered with the provider's first answer instead of acting twice. Failures are
//! classified once ([`ProviderError`]): transient ones are retried here and then handed back to
//! the consumer's retry queues; permanent ones are answers (a refused session or capture).

pub mod http;
pub mod paypal;
pub mod stripe;

use std::sync::Arc;

use futures::future::BoxFuture;
use lab_contracts::Money;
use uuid::Uuid;

use crate::store::Payment;

/// How a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused: retrying the same request cannot help.
    #[error("{provider} refused ({status} {code}): {message}")]
    Refused {
        provider: &'static str,
        status: u16,
        code: String,
        message: String,
    },
    /// The provider could not be reached or failed on its side; a later retry may succeed.
    #[error("{provider} is unavailable: {reason}")]
    Unavailable {
        provider: &'static str,
        reason: String,
    },
    /// The provider answered something we cannot read.
    #[error("{provider} answered unexpectedly: {reason}")]
    Protocol {
        provider: &'static str,
        reason: String,
    },
}

impl ProviderError {
    /// Whether the command should be retried later rather than answered now.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Refused { .. })
    }
}

/// A session to open.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// The order it pays for (metadata / custom id, and the idempotency key's root).
    pub order_id: Uuid,
    /// What the buyer is asked to pay.
    pub amount: Money,
    /// When it must be paid by (unix seconds).
    pub expires_at: i64,
}

/// An opened session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Stripe checkout session / PayPal order.
    pub session_id: String,
    /// The hosted payment page.
    pub payment_url: String,
    /// Stripe's payment intent.
    pub intent_id: Option<String>,
}

/// What a capture, void or refund produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Done {
    /// The provider's id of the capture or refund.
    pub id: Option<String>,
    /// Its amount, when the provider said.
    pub amount: Option<Money>,
}

/// One payment provider.
pub trait Provider: Send + Sync {
    /// `stripe` or `paypal`.
    fn name(&self) -> &'static str;
    /// Opens a hosted payment session.
    fn create_session<'a>(
        &'a self,
        request: &'a SessionRequest,
    ) -> BoxFuture<'a, Result<Session, ProviderError>>;
    /// Captures an authorized payment.
    fn capture<'a>(
        &'a self,
        payment: &'a Payment,
        amount: &'a Money,
    ) -> BoxFuture<'a, Result<Done, ProviderError>>;
    /// Cancels an open session or an authorization.
    fn void<'a>(&'a self, payment: &'a Payment) -> BoxFuture<'a, Result<Done, ProviderError>>;
    /// Refunds a captured payment in full.
    fn refund<'a>(&'a self, payment: &'a Payment) -> BoxFuture<'a, Result<Done, ProviderError>>;
}

/// Every configured provider by name.
#[derive(Clone)]
pub struct Providers(pub Vec<Arc<dyn Provider>>);

impl Providers {
    /// The provider called `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Provider> {
        self.0
            .iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .map(|p| &**p)
    }
}

/// The idempotency key of `operation` on `order_id`: the same for every retry of it.
pub fn idempotency_key(order_id: Uuid, operation: &str) -> String {
    format!("lab-{order_id}-{operation}")
}
