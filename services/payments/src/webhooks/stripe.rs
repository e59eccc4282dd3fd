//! Stripe webhooks: the `Stripe-Signature` check and the events payments acts on.
//!
//! The header is `t=<unix s>,v1=<hex>[,v1=<hex>…]`; each `v1` is HMAC-SHA256 over
//! `"{t}.{raw body}"`. Every configured secret is tried (two during a rotation) against every
//! `v1`, with the MAC's constant-time comparison, and the timestamp must be within the tolerance
//! of now, so a captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use lab_config::SecretString;
use serde_json::Value;
use sha2::Sha256;

use super::{Event, Target};
use crate::transitions::Observed;

/// Why a Stripe signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature timestamp is {0} s away from now (tolerance {1} s)")]
    Stale(i64, i64),
    #[error("no v1 signature matches any configured secret")]
    NoMatch,
    #[error("no webhook secret is configured")]
    NoSecret,
}

/// Checks `header` over `body` against `secrets` at unix time `now`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    now: i64,
    tolerance_s: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed("an element is not key=value"))?;
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("t is not a number"))?,
                );
            }
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            // v0 and future schemes are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed("no t"))?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed("no v1 signature"));
    }
    let skew = now.saturating_sub(timestamp);
    if skew.abs() > tolerance_s {
        return Err(SignatureError::Stale(skew, tolerance_s));
    }
    let secrets: Vec<&SecretString> = secrets.iter().filter(|s| !s.expose().is_empty()).collect();
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let mut matched = false;
    for secret in secrets {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
            continue;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        for signature in &signatures {
            // `verify_slice` compares in constant time; every pair is checked (no early exit),
            // so timing reveals nothing about which secret or signature matched.
            matched |= mac.clone().verify_slice(signature).is_ok();
        }
    }
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// The state a Stripe event type implies; `None` for types payments does not act on.
fn target(kind: &str) -> Option<Target> {
    Some(match kind {
        "payment_intent.amount_capturable_updated" => Target::Authorized,
        "payment_intent.payment_failed" => Target::Declined,
        "checkout.session.expired" => Target::Expired,
        "payment_intent.succeeded" => Target::Captured,
        "payment_intent.canceled" => Target::Voided,
        "charge.refunded" => Target::Refunded,
        _ => return None,
    })
}

fn text(v: &Value, pointer: &str) -> Option<String> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Reads a verified event body.
pub fn parse(body: &Value) -> Result<Event, String> {
    let event_id = text(body, "/id").ok_or("the event has no id")?;
    let kind = text(body, "/type").ok_or("the event has no type")?;
    let object = body.pointer("/data/object").cloned().unwrap_or(Value::Null);
    let order_id = text(&object, "/metadata/order_id").and_then(|s| s.parse().ok());
    let target = target(&kind);
    let object_kind = text(&object, "/object").unwrap_or_default();
    let currency = text(&object, "/currency").map(|c| c.to_ascii_uppercase());
    let amount_of = |field: &str| {
        Some(lab_contracts::Money {
            amount_minor: object.get(field)?.as_i64()?,
            currency: currency.clone()?,
        })
    };
    let amount = match target {
        Some(Target::Authorized) => amount_of("amount_capturable").or_else(|| amount_of("amount")),
        Some(Target::Captured) => amount_of("amount_received").or_else(|| amount_of("amount")),
        Some(Target::Refunded) => amount_of("amount_refunded").or_else(|| amount_of("amount")),
        _ => None,
    };
    let id = text(&object, "/id");
    let intent_id = match object_kind.as_str() {
        "payment_intent" => id.clone(),
        _ => text(&object, "/payment_intent"),
    };
    let observed = Observed {
        amount,
        intent_id,
        refund_id: (object_kind == "refund").then(|| id.clone()).flatten(),
        reason: text(&object, "/last_payment_error/message")
            .or_else(|| text(&object, "/last_payment_error/code"))
            .or_else(|| (target == Some(Target::Expired)).then(|| "expired".to_owned())),
        ..Observed::default()
    };
    Ok(Event {
        event_id,
        kind,
        order_id,
        target,
        observed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_header_without_t_or_v1_is_malformed() {
        let secrets = [SecretString::new("whsec")];
        assert!(matches!(
            verify(Some("v1=00"), b"{}", &secrets, 0, 300),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(Some("t=1"), b"{}", &secrets, 1, 300),
            Err(SignatureError::Malformed(_))
        ));
        assert_eq!(
            verify(None, b"{}", &secrets, 1, 300),
            Err(SignatureError::Missing)
        );
    }

    #[test]
    fn any_secret_matching_any_v1_is_accepted() {
        let secrets = [SecretString::new("old"), SecretString::new("new")];
        let header = format!("t=100,v1={},v1={}", "ab".repeat(32), sign("new", 100, b"x"));
        assert_eq!(verify(Some(&header), b"x", &secrets, 100, 300), Ok(()));
        assert_eq!(
            verify(Some(&header), b"y", &secrets, 100, 300),
            Err(SignatureError::NoMatch)
        );
    }
}
