//! The PayPal sandbox's objects: an order (`CREATED` → `COMPLETED` once approved and
//! authorized, or `VOIDED` when the buyer declines), its authorization (`CREATED` → `CAPTURED` |
//! `VOIDED`), captures (`COMPLETED` → `PARTIALLY_REFUNDED` → `REFUNDED`, or `DECLINED`),
//! refunds, and how each is written as JSON. Amounts are kept in minor units and written as
//! PayPal's decimal strings. The transitions are in `ops.rs`.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::page::PageView;
use crate::paypal::PaypalError;
use crate::sandbox::{Idempotency, Outbox, Scenario, now, rfc3339};
use crate::webhooks::{Event, Provider};

/// PayPal keeps an authorization capturable for 29 days.
pub(super) const AUTHORIZATION_LIFETIME_S: i64 = 29 * 24 * 3600;

/// Everything the PayPal sandbox remembers.
#[derive(Default)]
pub struct Books {
    /// Orders by id.
    pub(super) orders: HashMap<String, Order>,
    /// Authorizations by id.
    pub(super) authorizations: HashMap<String, Payment>,
    /// Captures by id.
    pub(super) captures: HashMap<String, Payment>,
    /// Refunds by id.
    pub(super) refunds: HashMap<String, Payment>,
    /// Access tokens and the unix second they expire.
    pub tokens: HashMap<String, i64>,
    /// Answers per `PayPal-Request-Id`.
    pub idempotency: Idempotency,
}

/// A checkout order with one purchase unit.
pub(super) struct Order {
    /// PayPal-style 17-character id.
    pub(super) id: String,
    /// The purchase unit's `reference_id`.
    pub(super) reference_id: String,
    /// The purchase unit's `custom_id`: the lab's order id.
    pub(super) custom_id: String,
    /// What was asked (orders) or moved (payments).
    pub(super) amount: Money,
    /// Where the hosted page sends the buyer back to (`return_url` of the order's
    /// `payment_source.paypal.experience_context` or older `application_context`).
    pub(super) return_url: Option<String>,
    /// The PSP's public URL when the order was made, base of its links.
    pub(super) base_url: String,
    /// `CREATED`, `COMPLETED` or `VOIDED`.
    pub(super) status: &'static str,
    /// Unix seconds.
    pub(super) created: i64,
    /// How the buyer and the webhooks of this order behave.
    pub(super) scenario: Scenario,
    /// Its authorizations, oldest first.
    pub(super) authorizations: Vec<String>,
    /// Its captures, oldest first.
    pub(super) captures: Vec<String>,
    /// Its refunds, oldest first.
    pub(super) refunds: Vec<String>,
}

/// An authorization, capture or refund: they share a shape.
pub(super) struct Payment {
    /// PayPal-style 17-character id.
    pub(super) id: String,
    /// The order it belongs to.
    pub(super) order: String,
    /// The authorization a capture took, or the capture a refund returned.
    pub(super) parent: Option<String>,
    /// What was asked (orders) or moved (payments).
    pub(super) amount: Money,
    /// `CREATED`, `CAPTURED`, `VOIDED`, `COMPLETED`, `DECLINED`, `PARTIALLY_REFUNDED` or `REFUNDED`.
    pub(super) status: &'static str,
    /// Unix seconds.
    pub(super) created: i64,
    /// Refunded so far (captures only).
    pub(super) refunded: i64,
}

/// An amount in minor units and its currency.
#[derive(Clone)]
pub struct Money {
    /// Minor units (cents).
    pub minor: i64,
    /// Upper-case ISO code.
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
pub(super) fn parse_decimal(raw: &str) -> Option<i64> {
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
    pub fn order_json(&self, id: &str) -> Result<Value, PaypalError> {
        let o = self
            .orders
            .get(id)
            .ok_or_else(|| PaypalError::NotFound(id.to_owned()))?;
        Ok(self.order_value(o, o.status))
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
            return_url: o.return_url.clone(),
        })
    }

    /// Replaces the scenario of order `id`; false when there is no such order.
    pub fn set_scenario(&mut self, id: &str, scenario: &Scenario) -> bool {
        self.orders
            .get_mut(id)
            .map(|o| o.scenario = scenario.clone())
            .is_some()
    }

    pub(super) fn order_value(&self, o: &Order, status: &str) -> Value {
        let base = &o.base_url;
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

    pub(super) fn payment_value(&self, p: &Payment, kind: Kind) -> Value {
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

    pub(super) fn scenario_of(&self, order: &str) -> Scenario {
        self.orders
            .get(order)
            .map(|o| o.scenario.clone())
            .unwrap_or_default()
    }

    pub(super) fn emit(&self, outbox: &mut Outbox, order: &str, events: Vec<Event>) {
        outbox.push(order, Provider::Paypal, &self.scenario_of(order), events);
    }
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Authorization,
    Capture,
    Refund,
}

#[cfg(test)]
mod tests {
    use super::parse_decimal;

    #[test]
    pub(super) fn decimal_strings_become_minor_units_and_malformed_ones_are_refused() {
        assert_eq!(parse_decimal("12.34"), Some(1234));
        assert_eq!(parse_decimal("12.3"), Some(1230));
        assert_eq!(parse_decimal("12"), Some(1200));
        for bad in ["", "-1", "1.234", "1e3", ".5", "1.", "abc"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }
}
