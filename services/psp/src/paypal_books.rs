//! The PayPal sandbox's objects and their state machines: an order (`CREATED` → `COMPLETED`
//! once approved and authorized, or `VOIDED` when the buyer declines), its authorization
//! (`CREATED` → `CAPTURED` | `VOIDED`), captures (`COMPLETED` → `PARTIALLY_REFUNDED` →
//! `REFUNDED`, or `DECLINED`) and refunds.
//!
//! Amounts are kept in minor units and written as PayPal's decimal strings. Each operation
//! validates first and mutates after, so a rejected call changes nothing and queues no webhook.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::page::PageView;
use crate::paypal::PaypalError;
use crate::sandbox::{Auto, Idempotency, Outbox, Scenario, UPPER, new_id, now, rfc3339};
use crate::webhooks::{Event, Provider};

/// PayPal keeps an authorization capturable for 29 days.
const AUTHORIZATION_LIFETIME_S: i64 = 29 * 24 * 3600;

/// Everything the PayPal sandbox remembers.
#[derive(Default)]
pub struct Books {
    orders: HashMap<String, Order>,
    authorizations: HashMap<String, Payment>,
    captures: HashMap<String, Payment>,
    refunds: HashMap<String, Payment>,
    /// Access tokens and the unix second they expire.
    pub tokens: HashMap<String, i64>,
    /// Answers per `PayPal-Request-Id`.
    pub idempotency: Idempotency,
}

/// A checkout order with one purchase unit.
struct Order {
    id: String,
    reference_id: String,
    custom_id: String,
    amount: Money,
    /// `CREATED`, `COMPLETED` or `VOIDED`.
    status: &'static str,
    created: i64,
    scenario: Scenario,
    authorizations: Vec<String>,
    captures: Vec<String>,
    refunds: Vec<String>,
}

/// An authorization, capture or refund: they share a shape.
struct Payment {
    id: String,
    order: String,
    /// The authorization a capture took, or the capture a refund returned.
    parent: Option<String>,
    amount: Money,
    status: &'static str,
    created: i64,
    /// Refunded so far (captures only).
    refunded: i64,
}

/// An amount in minor units and its currency.
#[derive(Clone)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

impl Money {
    /// `{"currency_code": "EUR", "value": "12.34"}` as PayPal sends it.
    pub fn parse(value: &Value) -> Result<Self, PaypalError> {
        let currency = value["currency_code"].as_str().unwrap_or_default();
        if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(PaypalError::invalid(
                "amount/currency_code",
                "must be a three-letter ISO code",
            ));
        }
        let raw = value["value"].as_str().unwrap_or_default();
        let minor = parse_decimal(raw).ok_or_else(|| {
            PaypalError::invalid("amount/value", "must be a decimal string like \"12.34\"")
        })?;
        Ok(Self {
            minor,
            currency: currency.to_owned(),
        })
    }

    pub fn json(&self) -> Value {
        json!({"currency_code": self.currency,
            "value": format!("{}.{:02}", self.minor / 100, self.minor % 100)})
    }
}

/// `"12.34"` → 1234; at most two decimals, no sign, no exponent.
fn parse_decimal(raw: &str) -> Option<i64> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (units, cents) = match raw.split_once('.') {
        Some((units, cents)) if digits(cents) && cents.len() <= 2 => (units, cents),
        Some(_) => return None,
        None => (raw, ""),
    };
    if !digits(units) {
        return None;
    }
    let cents: i64 = format!("{cents:0<2}").parse().ok()?;
    units
        .parse::<i64>()
        .ok()?
        .checked_mul(100)?
        .checked_add(cents)
}

impl Books {
    pub fn order_json(&self, id: &str, base_url: &str) -> Result<Value, PaypalError> {
        let o = self
            .orders
            .get(id)
            .ok_or_else(|| PaypalError::NotFound(id.to_owned()))?;
        Ok(self.order_value(o, o.status, base_url))
    }

    /// What the hosted page shows of order `id`, if it is one.
    pub fn page_view(&self, id: &str) -> Option<PageView> {
        let o = self.orders.get(id)?;
        Some(PageView {
            provider: "PayPal",
            amount_minor: o.amount.minor,
            currency: o.amount.currency.clone(),
            reference: o.custom_id.clone(),
            status: o.status,
            return_url: None,
        })
    }

    /// Replaces the scenario of order `id`; false when there is no such order.
    pub fn set_scenario(&mut self, id: &str, scenario: &Scenario) -> bool {
        self.orders
            .get_mut(id)
            .map(|o| o.scenario = scenario.clone())
            .is_some()
    }

    fn order_value(&self, o: &Order, status: &str, base: &str) -> Value {
        let list = |ids: &[String], map: &HashMap<String, Payment>, kind| {
            ids.iter()
                .filter_map(|id| map.get(id))
                .map(|p| self.payment_value(p, kind))
                .collect::<Vec<_>>()
        };
        let mut unit = json!({"reference_id": o.reference_id, "custom_id": o.custom_id, "amount": o.amount.json()});
        if !o.authorizations.is_empty() {
            unit["payments"] = json!({
                "authorizations": list(&o.authorizations, &self.authorizations, Kind::Authorization),
                "captures": list(&o.captures, &self.captures, Kind::Capture),
                "refunds": list(&o.refunds, &self.refunds, Kind::Refund),
            });
        }
        json!({"id": o.id, "intent": "AUTHORIZE", "status": status, "create_time": rfc3339(o.created),
        "custom_id": o.custom_id, "amount": o.amount.json(), "purchase_units": [unit],
        "links": [
            {"href": format!("{base}/paypal/v2/checkout/orders/{}", o.id), "rel": "self", "method": "GET"},
            {"href": format!("{base}/pay/{}", o.id), "rel": "approve", "method": "GET"},
        ]})
    }

    fn payment_value(&self, p: &Payment, kind: Kind) -> Value {
        let custom_id = self
            .orders
            .get(&p.order)
            .map(|o| o.custom_id.clone())
            .unwrap_or_default();
        let mut related = json!({"order_id": p.order});
        let mut value = json!({"id": p.id, "status": p.status, "amount": p.amount.json(), "custom_id": custom_id,
            "create_time": rfc3339(p.created), "update_time": rfc3339(now())});
        match kind {
            Kind::Authorization => {
                value["expiration_time"] = json!(rfc3339(p.created + AUTHORIZATION_LIFETIME_S));
            }
            Kind::Capture => {
                related["authorization_id"] = json!(p.parent);
                value["final_capture"] = json!(true);
            }
            Kind::Refund => related["capture_id"] = json!(p.parent),
        }
        value["supplementary_data"] = json!({"related_ids": related});
        value
    }

    fn scenario_of(&self, order: &str) -> Scenario {
        self.orders
            .get(order)
            .map(|o| o.scenario.clone())
            .unwrap_or_default()
    }

    fn emit(&self, outbox: &mut Outbox, order: &str, events: Vec<Event>) {
        outbox.push(order, Provider::Paypal, &self.scenario_of(order), events);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Authorization,
    Capture,
    Refund,
}

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
    Ok((201, books.order_json(&id, base)?))
}

/// The buyer approves; the sandbox authorizes at once on the merchant's behalf.
pub fn approve(books: &mut Books, id: &str, outbox: &mut Outbox) -> Result<(), String> {
    let order = books.orders.get(id).ok_or("no such order")?;
    if order.status != "CREATED" {
        return Err(format!("the order is {}", order.status));
    }
    let approved = books.order_value(order, "APPROVED", "");
    let auth_id = new_id("", 17, UPPER);
    let amount = Money {
        minor: (order.amount.minor + order.scenario.authorize_amount_delta_minor).max(0),
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
    let value = books.order_value(order, "VOIDED", "");
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

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    fn decimal_strings_become_minor_units_and_malformed_ones_are_refused() {
        assert_eq!(parse_decimal("12.34"), Some(1234));
        assert_eq!(parse_decimal("12.3"), Some(1230));
        assert_eq!(parse_decimal("12"), Some(1200));
        for bad in ["", "-1", "1.234", "1e3", ".5", "1.", "abc"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }
}
