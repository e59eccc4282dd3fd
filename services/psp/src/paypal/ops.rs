//! The PayPal sandbox's transitions, one function per call or buyer action. Each validates
//! first and mutates after, so a rejected call changes nothing and queues no webhook.

use serde_json::Value;

use super::PaypalError;
use super::books::{Books, Kind, Money, Order, Payment};
use crate::sandbox::{Auto, Outbox, Scenario, UPPER, new_id, now};
use crate::webhooks::Event;

/// `POST /v2/checkout/orders`.
pub fn create_order(
    books: &mut Books,
    body: &Value,
    default: &Scenario,
    base: &str,
    outbox: &mut Outbox,
) -> Result<(u16, Value), PaypalError> {
    if body["intent"].as_str() != Some("AUTHORIZE") {
        return Err(PaypalError::invalid(
            "intent",
            "the sandbox supports AUTHORIZE only",
        ));
    }
    let units = body["purchase_units"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let [unit] = units else {
        return Err(PaypalError::invalid(
            "purchase_units",
            "exactly one purchase unit is required",
        ));
    };
    let amount = Money::parse(&unit["amount"])?;
    if amount.minor == 0 {
        return Err(PaypalError::invalid(
            "amount/value",
            "must be more than zero",
        ));
    }
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let scenario = match body["lab_scenario"].as_str() {
        Some(name) => Scenario::preset(name).ok_or_else(|| {
            PaypalError::invalid("lab_scenario", format!("no scenario named {name:?}"))
        })?,
        None => default.clone(),
    };
    let id = new_id("", 17, UPPER);
    books.orders.insert(
        id.clone(),
        Order {
            id: id.clone(),
            reference_id: text(&unit["reference_id"]),
            custom_id: text(&unit["custom_id"]),
            amount,
            base_url: base.to_owned(),
            return_url: body
                .pointer("/payment_source/paypal/experience_context/return_url")
                .or_else(|| body.pointer("/application_context/return_url"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            status: "CREATED",
            created: now(),
            scenario: scenario.clone(),
            authorizations: Vec::new(),
            captures: Vec::new(),
            refunds: Vec::new(),
        },
    );
    // `auto` acts on an order that was just created, so neither can fail.
    let _ = match scenario.auto {
        Auto::None => Ok(()),
        Auto::Approve => approve(books, &id, outbox),
        Auto::Decline => decline(books, &id, outbox),
    };
    Ok((201, books.order_json(&id)?))
}

/// The buyer approves; the sandbox authorizes at once on the merchant's behalf.
pub fn approve(books: &mut Books, id: &str, outbox: &mut Outbox) -> Result<(), String> {
    let order = books.orders.get(id).ok_or("no such order")?;
    if order.status != "CREATED" {
        return Err(format!("the order is {}", order.status));
    }
    let approved = books.order_value(order, "APPROVED");
    let auth_id = new_id("", 17, UPPER);
    let amount = Money {
        minor: order
            .amount
            .minor
            .saturating_add(order.scenario.authorize_amount_delta_minor)
            .max(0),
        currency: order.amount.currency.clone(),
    };
    let auth = Payment {
        id: auth_id.clone(),
        order: id.to_owned(),
        parent: None,
        amount,
        status: "CREATED",
        created: now(),
        refunded: 0,
    };
    let auth_value = books.payment_value(&auth, Kind::Authorization);
    books.authorizations.insert(auth_id.clone(), auth);
    let order = books.orders.get_mut(id).ok_or("no such order")?;
    order.status = "COMPLETED";
    order.authorizations.push(auth_id);
    let events = vec![
        Event::paypal("CHECKOUT.ORDER.APPROVED", "checkout-order", approved),
        Event::paypal("PAYMENT.AUTHORIZATION.CREATED", "authorization", auth_value),
    ];
    books.emit(outbox, id, events);
    Ok(())
}

/// The buyer declines: the order is voided.
pub fn decline(books: &mut Books, id: &str, outbox: &mut Outbox) -> Result<(), String> {
    let order = books.orders.get_mut(id).ok_or("no such order")?;
    if order.status != "CREATED" {
        return Err(format!("the order is {}", order.status));
    }
    order.status = "VOIDED";
    let Some(order) = books.orders.get(id) else {
        return Err("no such order".into());
    };
    let value = books.order_value(order, "VOIDED");
    books.emit(
        outbox,
        id,
        vec![Event::paypal(
            "CHECKOUT.PAYMENT-APPROVAL.REVERSED",
            "checkout-order",
            value,
        )],
    );
    Ok(())
}

/// `POST /v2/payments/authorizations/{id}/capture`.
pub fn capture(
    books: &mut Books,
    id: &str,
    body: &Value,
    outbox: &mut Outbox,
) -> Result<(u16, Value), PaypalError> {
    let auth = books
        .authorizations
        .get(id)
        .ok_or_else(|| PaypalError::NotFound(id.to_owned()))?;
    if auth.status != "CREATED" {
        return Err(PaypalError::unprocessable(
            state_issue(auth.status),
            format!("the authorization is {}", auth.status),
        ));
    }
    let amount = match body.get("amount") {
        Some(a) => Money::parse(a)?,
        None => auth.amount.clone(),
    };
    if amount.minor == 0
        || amount.minor > auth.amount.minor
        || amount.currency != auth.amount.currency
    {
        return Err(PaypalError::unprocessable(
            "AMOUNT_CANNOT_BE_GREATER_THAN_AUTHORIZED",
            "the capture must be more than zero and at most the authorized amount, in its currency",
        ));
    }
    let order = auth.order.clone();
    let fail = books.scenario_of(&order).fail_capture;
    let capture = Payment {
        id: new_id("", 17, UPPER),
        order: order.clone(),
        parent: Some(id.to_owned()),
        amount,
        status: if fail { "DECLINED" } else { "COMPLETED" },
        created: now(),
        refunded: 0,
    };
    let value = books.payment_value(&capture, Kind::Capture);
    let capture_id = capture.id.clone();
    books.captures.insert(capture_id.clone(), capture);
    if let Some(o) = books.orders.get_mut(&order) {
        o.captures.push(capture_id);
    }
    if fail {
        books.emit(
            outbox,
            &order,
            vec![Event::paypal("PAYMENT.CAPTURE.DENIED", "capture", value)],
        );
        return Err(PaypalError::unprocessable(
            "INSTRUMENT_DECLINED",
            "the sandbox was told to refuse this capture",
        ));
    }
    if let Some(a) = books.authorizations.get_mut(id) {
        a.status = "CAPTURED";
    }
    books.emit(
        outbox,
        &order,
        vec![Event::paypal(
            "PAYMENT.CAPTURE.COMPLETED",
            "capture",
            value.clone(),
        )],
    );
    Ok((201, value))
}

fn state_issue(status: &str) -> &'static str {
    match status {
        "CAPTURED" => "AUTHORIZATION_ALREADY_CAPTURED",
        "VOIDED" => "AUTHORIZATION_VOIDED",
        _ => "AUTHORIZATION_EXPIRED",
    }
}

/// `POST /v2/payments/authorizations/{id}/void`.
pub fn void(
    books: &mut Books,
    id: &str,
    _: &Value,
    outbox: &mut Outbox,
) -> Result<(u16, Value), PaypalError> {
    let auth = books
        .authorizations
        .get_mut(id)
        .ok_or_else(|| PaypalError::NotFound(id.to_owned()))?;
    if auth.status != "CREATED" {
        return Err(PaypalError::unprocessable(
            state_issue(auth.status),
            format!("the authorization is {}", auth.status),
        ));
    }
    auth.status = "VOIDED";
    let order = auth.order.clone();
    let Some(auth) = books.authorizations.get(id) else {
        return Err(PaypalError::NotFound(id.to_owned()));
    };
    let value = books.payment_value(auth, Kind::Authorization);
    books.emit(
        outbox,
        &order,
        vec![Event::paypal(
            "PAYMENT.AUTHORIZATION.VOIDED",
            "authorization",
            value.clone(),
        )],
    );
    Ok((200, value))
}

/// `POST /v2/payments/captures/{id}/refund`.
pub fn refund(
    books: &mut Books,
    id: &str,
    body: &Value,
    outbox: &mut Outbox,
) -> Result<(u16, Value), PaypalError> {
    let capture = books
        .captures
        .get(id)
        .ok_or_else(|| PaypalError::NotFound(id.to_owned()))?;
    if !matches!(capture.status, "COMPLETED" | "PARTIALLY_REFUNDED") {
        let issue = if capture.status == "REFUNDED" {
            "CAPTURE_FULLY_REFUNDED"
        } else {
            "REFUND_NOT_ALLOWED"
        };
        return Err(PaypalError::unprocessable(
            issue,
            format!("the capture is {}", capture.status),
        ));
    }
    let left = capture.amount.minor - capture.refunded;
    let amount = match body.get("amount") {
        Some(a) => Money::parse(a)?,
        None => Money {
            minor: left,
            currency: capture.amount.currency.clone(),
        },
    };
    if amount.minor == 0 || amount.minor > left || amount.currency != capture.amount.currency {
        return Err(PaypalError::unprocessable(
            "REFUND_AMOUNT_EXCEEDED",
            format!("at most {left} minor units are left to refund"),
        ));
    }
    let order = capture.order.clone();
    let refund = Payment {
        id: new_id("", 17, UPPER),
        order: order.clone(),
        parent: Some(id.to_owned()),
        amount,
        status: "COMPLETED",
        created: now(),
        refunded: 0,
    };
    let value = books.payment_value(&refund, Kind::Refund);
    let refund_id = refund.id.clone();
    let minor = refund.amount.minor;
    books.refunds.insert(refund_id.clone(), refund);
    if let Some(c) = books.captures.get_mut(id) {
        c.refunded += minor;
        c.status = if c.refunded == c.amount.minor {
            "REFUNDED"
        } else {
            "PARTIALLY_REFUNDED"
        };
    }
    if let Some(o) = books.orders.get_mut(&order) {
        o.refunds.push(refund_id);
    }
    books.emit(
        outbox,
        &order,
        vec![Event::paypal(
            "PAYMENT.CAPTURE.REFUNDED",
            "refund",
            value.clone(),
        )],
    );
    Ok((201, value))
}
