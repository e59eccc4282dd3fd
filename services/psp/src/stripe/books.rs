//! The Stripe sandbox's objects: a checkout session (`open` → `complete` | `expired`), its
//! payment intent (`requires_payment_method` → `requires_capture` → `succeeded` | `canceled`),
//! refunds, and how each is written as JSON. The transitions are in `ops.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::page::PageView;
use crate::sandbox::{Idempotency, Scenario};
use crate::stripe::StripeError;

/// Stripe's default session lifetime, and its maximum.
pub(super) const SESSION_LIFETIME_S: i64 = 24 * 3600;

/// What an operation needs besides the books and the parameters.
pub struct Ctx {
    /// Base of the hosted page's URL.
    pub base_url: String,
    /// The scenario of sessions that name none.
    pub default_scenario: Scenario,
}

/// Everything the Stripe sandbox remembers.
#[derive(Default)]
pub struct Books {
    /// Checkout sessions by id.
    pub(super) sessions: HashMap<String, Session>,
    /// Payment intents by id.
    pub(super) intents: HashMap<String, Intent>,
    /// `(expires_at, id)` of every session created, soonest first, so the expiry check on each
    /// call looks at the due ones only; entries of sessions no longer open are skipped.
    pub(super) expiries: BTreeSet<(i64, String)>,
    /// Refunds by id, as answered.
    pub(super) refunds: HashMap<String, Value>,
    /// Answers per `Idempotency-Key`.
    pub idempotency: Idempotency,
}

/// A checkout session.
pub(super) struct Session {
    /// `cs_test_…`.
    pub(super) id: String,
    /// Its payment intent.
    pub(super) intent: String,
    /// In minor units.
    pub(super) amount: i64,
    /// Lower-case ISO code, as Stripe writes it.
    pub(super) currency: String,
    /// `metadata[…]` as given; `order_id` is the lab's order.
    pub(super) metadata: BTreeMap<String, String>,
    /// `open`, `complete` or `expired`.
    pub(super) status: &'static str,
    /// Unix seconds.
    pub(super) created: i64,
    /// Unix seconds; an open session past it expires.
    pub(super) expires_at: i64,
    /// Where the hosted page sends the buyer back to.
    pub(super) success_url: Option<String>,
    /// The hosted page.
    pub(super) url: String,
    /// How the buyer and the webhooks of this session behave.
    pub(super) scenario: Scenario,
}

/// A payment intent with `capture_method=manual`.
pub(super) struct Intent {
    /// `pi_…`.
    pub(super) id: String,
    /// The session it was created for.
    pub(super) session: String,
    /// In minor units.
    pub(super) amount: i64,
    /// Authorized and not yet captured.
    pub(super) amount_capturable: i64,
    /// Captured.
    pub(super) amount_received: i64,
    /// Refunded so far.
    pub(super) amount_refunded: i64,
    /// Lower-case ISO code, as Stripe writes it.
    pub(super) currency: String,
    /// `metadata[…]` as given; `order_id` is the lab's order.
    pub(super) metadata: BTreeMap<String, String>,
    /// `requires_payment_method`, `requires_capture`, `succeeded` or `canceled`.
    pub(super) status: &'static str,
    /// Unix seconds.
    pub(super) created: i64,
    /// Why the last attempt to pay failed.
    pub(super) last_payment_error: Option<Value>,
    /// Why it was canceled.
    pub(super) cancellation_reason: Option<String>,
}

impl Books {
    pub fn session_json(&self, id: &str) -> Result<Value, StripeError> {
        self.sessions
            .get(id)
            .map(|s| self.session_value(s))
            .ok_or_else(|| not_found("checkout.session", id))
    }

    pub fn intent_json(&self, id: &str) -> Result<Value, StripeError> {
        self.intents
            .get(id)
            .map(intent_value)
            .ok_or_else(|| not_found("payment_intent", id))
    }

    /// What the hosted page shows of session `id`, if it is one.
    pub fn page_view(&self, id: &str) -> Option<PageView> {
        let s = self.sessions.get(id)?;
        Some(PageView {
            provider: "Stripe",
            amount_minor: s.amount,
            currency: s.currency.to_ascii_uppercase(),
            reference: s.metadata.get("order_id").cloned().unwrap_or_default(),
            status: s.status,
            // Stripe fills this template in the success URL with the session's id.
            return_url: s
                .success_url
                .as_ref()
                .map(|url| url.replace("{CHECKOUT_SESSION_ID}", &s.id)),
        })
    }

    /// Replaces the scenario of session `id`; false when there is no such session.
    pub fn set_scenario(&mut self, id: &str, scenario: &Scenario) -> bool {
        self.sessions
            .get_mut(id)
            .map(|s| s.scenario = scenario.clone())
            .is_some()
    }

    pub(super) fn session_value(&self, s: &Session) -> Value {
        let payment_status = match self.intents.get(&s.intent).map(|i| i.status) {
            Some("succeeded") => "paid",
            _ => "unpaid",
        };
        json!({"id": s.id, "object": "checkout.session", "amount_total": s.amount, "currency": s.currency,
            "status": s.status, "payment_status": payment_status, "payment_intent": s.intent, "url": s.url,
            "created": s.created, "expires_at": s.expires_at, "success_url": s.success_url,
            "metadata": s.metadata, "mode": "payment", "livemode": false})
    }
}

pub(super) fn intent_value(i: &Intent) -> Value {
    json!({"id": i.id, "object": "payment_intent", "amount": i.amount, "amount_capturable": i.amount_capturable,
        "amount_received": i.amount_received, "currency": i.currency, "status": i.status,
        "capture_method": "manual", "metadata": i.metadata, "created": i.created,
        "last_payment_error": i.last_payment_error, "cancellation_reason": i.cancellation_reason,
        "livemode": false})
}

pub(super) fn not_found(kind: &'static str, id: &str) -> StripeError {
    StripeError::NotFound {
        kind,
        id: id.to_owned(),
    }
}

pub(super) fn unexpected(
    code: &'static str,
    what: &str,
    id: &str,
    status: &str,
    wanted: &str,
) -> StripeError {
    StripeError::State {
        code,
        message: format!("This {what} ({id}) has a status of {status}; only {wanted} is allowed."),
    }
}

pub(super) fn declined_error() -> Value {
    json!({"type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
        "message": "Your card was declined."})
}
