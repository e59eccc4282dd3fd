//! The Stripe sandbox's transitions, one function per call or buyer action. Each validates
//! first and mutates after, so a rejected call changes nothing and queues no webhook.

use serde_json::{Value, json};

use super::books::{
    Books, Ctx, Intent, SESSION_LIFETIME_S, Session, declined_error, intent_value, not_found,
    unexpected,
};
use super::{Params, StripeError};
use crate::sandbox::{Auto, MIXED, Outbox, Scenario, new_id, now};
use crate::webhooks::{Event, Provider};

/// Stripe's own ceiling for a charge: eight digits of minor units.
const MAX_AMOUNT: i64 = 99_999_999;

/// `POST /v1/checkout/sessions`.
pub fn create_session(
    books: &mut Books,
    (): (),
    p: &Params,
    ctx: &Ctx,
    outbox: &mut Outbox,
) -> Result<Value, StripeError> {
    let amount = p.integer("amount")?.ok_or(StripeError::Missing("amount"))?;
    if amount == 0 || amount > MAX_AMOUNT {
        return Err(StripeError::invalid(
            "amount",
            format!("must be between 1 and {MAX_AMOUNT}"),
        ));
    }
    let currency = p.get("currency").ok_or(StripeError::Missing("currency"))?;
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(StripeError::invalid(
            "currency",
            "must be a three-letter ISO code",
        ));
    }
    let created = now();
    let expires_at = p
        .integer("expires_at")?
        .unwrap_or(created + SESSION_LIFETIME_S);
    if expires_at <= created || expires_at > created + SESSION_LIFETIME_S {
        return Err(StripeError::invalid(
            "expires_at",
            "must be in the next 24 hours",
        ));
    }
    let metadata = p.metadata();
    let scenario = match metadata.get("lab_scenario") {
        Some(name) => Scenario::preset(name).ok_or_else(|| {
            StripeError::invalid(
                "metadata[lab_scenario]",
                format!("no scenario named {name:?}"),
            )
        })?,
        None => ctx.default_scenario.clone(),
    };
    let id = new_id("cs_test_", 58, MIXED);
    let intent = new_id("pi_", 24, MIXED);
    let currency = currency.to_ascii_lowercase();
    books.intents.insert(
        intent.clone(),
        Intent {
            id: intent.clone(),
            session: id.clone(),
            amount,
            amount_capturable: 0,
            amount_received: 0,
            amount_refunded: 0,
            currency: currency.clone(),
            metadata: metadata.clone(),
            status: "requires_payment_method",
            created,
            last_payment_error: None,
            cancellation_reason: None,
        },
    );
    books.expiries.insert((expires_at, id.clone()));
    books.sessions.insert(
        id.clone(),
        Session {
            id: id.clone(),
            intent,
            amount,
            currency,
            metadata,
            status: "open",
            created,
            expires_at,
            success_url: p.get("success_url").map(str::to_owned),
            url: format!("{}/pay/{id}", ctx.base_url),
            scenario: scenario.clone(),
        },
    );
    // `auto` acts on a session that was just created, so neither can fail.
    let _ = match scenario.auto {
        Auto::None => Ok(()),
        Auto::Approve => approve(books, &id, outbox),
        Auto::Decline => decline(books, &id, outbox),
    };
    books.session_json(&id)
}

/// The buyer approves: the intent is authorized (`requires_capture`) and the session completes.
pub fn approve(books: &mut Books, id: &str, outbox: &mut Outbox) -> Result<(), String> {
    let session = books.sessions.get_mut(id).ok_or("no such session")?;
    if session.status != "open" {
        return Err(format!("the session is {}", session.status));
    }
    let intent = books
        .intents
        .get_mut(&session.intent)
        .ok_or("the session has no intent")?;
    session.status = "complete";
    intent.status = "requires_capture";
    intent.last_payment_error = None;
    intent.amount_capturable = intent
        .amount
        .saturating_add(session.scenario.authorize_amount_delta_minor)
        .max(0);
    let intent = intent_value(intent);
    let session = books.sessions.get(id).ok_or("no such session")?;
    let events = vec![
        Event::stripe("checkout.session.completed", books.session_value(session)),
        Event::stripe("payment_intent.amount_capturable_updated", intent),
    ];
    outbox.push(id, Provider::Stripe, &session.scenario, events);
    Ok(())
}

/// The buyer's card is declined: the session stays open for another try.
pub fn decline(books: &mut Books, id: &str, outbox: &mut Outbox) -> Result<(), String> {
    let session = books.sessions.get(id).ok_or("no such session")?;
    if session.status != "open" {
        return Err(format!("the session is {}", session.status));
    }
    let intent = books
        .intents
        .get_mut(&session.intent)
        .ok_or("the session has no intent")?;
    intent.last_payment_error = Some(declined_error());
    let event = Event::stripe("payment_intent.payment_failed", intent_value(intent));
    outbox.push(id, Provider::Stripe, &session.scenario, vec![event]);
    Ok(())
}

/// Expires every open session past its `expires_at`.
pub fn expire_due(books: &mut Books, now: i64, outbox: &mut Outbox) {
    while books.expiries.first().is_some_and(|(at, _)| *at <= now) {
        let Some((_, id)) = books.expiries.pop_first() else {
            return;
        };
        if books.sessions.get(&id).is_some_and(|s| s.status == "open") {
            expire(books, &id, outbox);
        }
    }
}

/// `open` → `expired`, its intent canceled, `checkout.session.expired` sent.
fn expire(books: &mut Books, id: &str, outbox: &mut Outbox) {
    let Some(session) = books.sessions.get_mut(id) else {
        return;
    };
    session.status = "expired";
    if let Some(intent) = books.intents.get_mut(&session.intent) {
        intent.status = "canceled";
        intent.cancellation_reason = Some("abandoned".into());
    }
    let Some(session) = books.sessions.get(id) else {
        return;
    };
    let event = Event::stripe("checkout.session.expired", books.session_value(session));
    outbox.push(id, Provider::Stripe, &session.scenario, vec![event]);
}

/// `POST /v1/checkout/sessions/{id}/expire`.
pub fn expire_session(
    books: &mut Books,
    id: &str,
    _: &Params,
    _: &Ctx,
    outbox: &mut Outbox,
) -> Result<Value, StripeError> {
    let session = books
        .sessions
        .get(id)
        .ok_or_else(|| not_found("checkout.session", id))?;
    if session.status != "open" {
        return Err(unexpected(
            "checkout_session_unexpected_state",
            "Checkout Session",
            id,
            session.status,
            "open",
        ));
    }
    expire(books, id, outbox);
    books.session_json(id)
}

/// `POST /v1/payment_intents/{id}/capture`.
pub fn capture(
    books: &mut Books,
    id: &str,
    p: &Params,
    _: &Ctx,
    outbox: &mut Outbox,
) -> Result<Value, StripeError> {
    let intent = books
        .intents
        .get(id)
        .ok_or_else(|| not_found("payment_intent", id))?;
    if intent.status != "requires_capture" {
        return Err(unexpected(
            "payment_intent_unexpected_state",
            "PaymentIntent",
            id,
            intent.status,
            "requires_capture",
        ));
    }
    let amount = p
        .integer("amount_to_capture")?
        .unwrap_or(intent.amount_capturable);
    if amount == 0 || amount > intent.amount_capturable {
        return Err(StripeError::State {
            code: "amount_too_large",
            message: format!(
                "amount_to_capture must be between 1 and {}",
                intent.amount_capturable
            ),
        });
    }
    let session = intent.session.clone();
    let scenario = books
        .sessions
        .get(&session)
        .map(|s| s.scenario.clone())
        .unwrap_or_default();
    let Some(intent) = books.intents.get_mut(id) else {
        return Err(not_found("payment_intent", id));
    };
    if scenario.fail_capture {
        intent.status = "requires_payment_method";
        intent.amount_capturable = 0;
        intent.last_payment_error = Some(declined_error());
        let event = Event::stripe("payment_intent.payment_failed", intent_value(intent));
        outbox.push(&session, Provider::Stripe, &scenario, vec![event]);
        return Err(StripeError::Declined);
    }
    intent.status = "succeeded";
    intent.amount_received = amount;
    intent.amount_capturable = 0;
    let value = intent_value(intent);
    outbox.push(
        &session,
        Provider::Stripe,
        &scenario,
        vec![Event::stripe("payment_intent.succeeded", value.clone())],
    );
    Ok(value)
}

/// `POST /v1/payment_intents/{id}/cancel`.
pub fn cancel(
    books: &mut Books,
    id: &str,
    p: &Params,
    _: &Ctx,
    outbox: &mut Outbox,
) -> Result<Value, StripeError> {
    let intent = books
        .intents
        .get_mut(id)
        .ok_or_else(|| not_found("payment_intent", id))?;
    if !matches!(
        intent.status,
        "requires_payment_method" | "requires_capture"
    ) {
        return Err(unexpected(
            "payment_intent_unexpected_state",
            "PaymentIntent",
            id,
            intent.status,
            "requires_payment_method or requires_capture",
        ));
    }
    intent.status = "canceled";
    intent.amount_capturable = 0;
    intent.cancellation_reason = Some(
        p.get("cancellation_reason")
            .unwrap_or("requested_by_customer")
            .to_owned(),
    );
    let value = intent_value(intent);
    let session = intent.session.clone();
    let scenario = match books.sessions.get_mut(&session) {
        Some(s) => {
            // An open session cannot be paid any more once its intent is canceled.
            if s.status == "open" {
                s.status = "expired";
            }
            s.scenario.clone()
        }
        None => Scenario::default(),
    };
    outbox.push(
        &session,
        Provider::Stripe,
        &scenario,
        vec![Event::stripe("payment_intent.canceled", value.clone())],
    );
    Ok(value)
}

/// `POST /v1/refunds`.
pub fn refund(
    books: &mut Books,
    (): (),
    p: &Params,
    _: &Ctx,
    outbox: &mut Outbox,
) -> Result<Value, StripeError> {
    let id = p
        .get("payment_intent")
        .ok_or(StripeError::Missing("payment_intent"))?;
    let intent = books
        .intents
        .get_mut(id)
        .ok_or_else(|| not_found("payment_intent", id))?;
    if intent.status != "succeeded" {
        return Err(unexpected(
            "payment_intent_unexpected_state",
            "PaymentIntent",
            id,
            intent.status,
            "succeeded",
        ));
    }
    let left = intent.amount_received - intent.amount_refunded;
    let amount = p.integer("amount")?.unwrap_or(left);
    if amount == 0 || amount > left {
        let code = if left == 0 {
            "charge_already_refunded"
        } else {
            "amount_too_large"
        };
        return Err(StripeError::State {
            code,
            message: format!("the refund must be between 1 and {left}"),
        });
    }
    intent.amount_refunded += amount;
    let refund_id = new_id("re_", 24, MIXED);
    let refund = json!({"id": refund_id, "object": "refund", "amount": amount, "currency": intent.currency,
        "payment_intent": intent.id, "status": "succeeded", "metadata": intent.metadata, "created": now(),
        "amount_refunded_total": intent.amount_refunded});
    books.refunds.insert(refund_id, refund.clone());
    let session = intent.session.clone();
    let scenario = books
        .sessions
        .get(&session)
        .map(|s| s.scenario.clone())
        .unwrap_or_default();
    outbox.push(
        &session,
        Provider::Stripe,
        &scenario,
        vec![Event::stripe("charge.refunded", refund.clone())],
    );
    Ok(refund)
}
