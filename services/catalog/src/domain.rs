//! Catalog values that validate on construction, so an invalid product cannot be represented:
//! every constructor names the field it rejects, which becomes a 422 problem at the edge.

use serde::{Deserialize, Serialize};

/// A rejected field: its name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// Stock-keeping unit: upper-case letters, digits and dashes, 2–64 characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (2..=64).contains(&raw.len())
            && raw
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
            && !raw.starts_with('-');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                "sku",
                "2–64 characters: A–Z, 0–9 and '-', not starting with '-'",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest product name; long enough for any real title, short enough for a card.
pub const NAME_MAX: usize = 120;
/// Longest description.
pub const DESCRIPTION_MAX: usize = 2000;

/// A product's display name: 1–120 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if trimmed.chars().count() > NAME_MAX {
            return Err(invalid("name", format!("at most {NAME_MAX} characters")));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(invalid("name", "must not contain control characters"));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A description of at most 2000 characters.
pub fn parse_description(raw: &str) -> Result<String, Invalid> {
    if raw.chars().count() > DESCRIPTION_MAX {
        return Err(invalid(
            "description",
            format!("at most {DESCRIPTION_MAX} characters"),
        ));
    }
    Ok(raw.to_owned())
}

/// The currencies the sandbox PSP settles; an unknown code is refused rather than guessed.
pub const CURRENCIES: [&str; 10] = [
    "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "DKK",
];

/// An ISO 4217 code from [`CURRENCIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency(&'static str);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        CURRENCIES
            .iter()
            .find(|c| **c == raw)
            .map(|c| Self(c))
            .ok_or_else(|| {
                invalid(
                    "currency",
                    format!("unknown currency {raw:?}; one of {}", CURRENCIES.join(", ")),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// A price in minor units (cents); never negative, at most 10^12 so sums cannot overflow.
pub fn parse_price(raw: i64) -> Result<i64, Invalid> {
    if raw < 0 {
        Err(invalid("price_minor", "must not be negative"))
    } else if raw > 1_000_000_000_000 {
        Err(invalid("price_minor", "at most 1000000000000"))
    } else {
        Ok(raw)
    }
}

/// A stock level: 0 to 1,000,000 units.
pub fn parse_stock(field: &'static str, raw: i64) -> Result<i32, Invalid> {
    if raw < 0 {
        Err(invalid(field, "must not be negative"))
    } else if raw > 1_000_000 {
        Err(invalid(field, "at most 1000000"))
    } else {
        Ok(raw as i32)
    }
}

/// A quantity on an order line: 1 to 1,000.
pub fn parse_quantity(raw: i64) -> Result<i32, Invalid> {
    if (1..=1_000).contains(&raw) {
        Ok(raw as i32)
    } else {
        Err(invalid("quantity", "between 1 and 1000"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sku_is_upper_case_letters_digits_and_dashes() {
        assert!(Sku::parse("LAB-001").is_ok());
        assert_eq!(Sku::parse("lab-1").unwrap_err().field, "sku");
        assert!(Sku::parse("-AB").is_err());
        assert!(Sku::parse("A").is_err());
    }

    #[test]
    fn a_name_is_trimmed_bounded_and_printable() {
        assert_eq!(ProductName::parse("  Mug ").unwrap().into_inner(), "Mug");
        assert!(ProductName::parse("   ").is_err());
        assert!(ProductName::parse(&"x".repeat(121)).is_err());
        assert!(ProductName::parse(&"é".repeat(120)).is_ok());
        assert!(ProductName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn money_and_stock_are_never_negative_and_currencies_are_known() {
        assert_eq!(parse_price(-1).unwrap_err().field, "price_minor");
        assert_eq!(parse_stock("on_hand", -1).unwrap_err().field, "on_hand");
        assert_eq!(Currency::parse("XXX").unwrap_err().field, "currency");
        assert_eq!(Currency::parse("EUR").unwrap().as_str(), "EUR");
        assert!(parse_quantity(0).is_err());
        assert!(parse_quantity(1001).is_err());
    }
}
