//! Orders values that validate on construction, so an invalid claim or order cannot be
//! represented: every constructor names the field it rejects, which becomes a 422 problem at the
//! edge.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A rejected field: its name and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Longest claim key, idempotency key or customer id: fits any UUID, hash or session id.
pub const KEY_MAX: usize = 255;

/// Whether `raw` is 1–255 characters, none of them a control character.
fn printable(raw: &str) -> bool {
    (1..=KEY_MAX).contains(&raw.chars().count()) && !raw.chars().any(char::is_control)
}

/// A claim key or `Idempotency-Key`: 1–255 printable characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimKey(String);

impl ClaimKey {
    /// Parses `raw`, naming `field` (`key`, `Idempotency-Key`) when it is refused.
    pub fn parse(field: &str, raw: &str) -> Result<Self, Invalid> {
        if printable(raw) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                field,
                format!("1–{KEY_MAX} printable characters (no control characters)"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Shortest claim lifetime: below a few seconds a retry could outlive the claim it repeats.
pub const TTL_MIN_S: i64 = 5;
/// Longest claim lifetime: one day, as long as the edge keeps idempotent responses.
pub const TTL_MAX_S: i64 = 86_400;

/// How long a claim holds, in seconds (5–86,400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(i64);

impl Ttl {
    pub fn parse(raw: i64) -> Result<Self, Invalid> {
        if (TTL_MIN_S..=TTL_MAX_S).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(invalid(
                "ttl_s",
                format!("between {TTL_MIN_S} and {TTL_MAX_S} seconds"),
            ))
        }
    }

    pub fn seconds(self) -> i64 {
        self.0
    }
}

/// Who placed an order: a signed-in user (`user:<sub>`, from identity's token) or a visitor's
/// session id (the BFF's `X-Lab-Customer`). A session id may not pose as a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customer(String);

/// Prefix of a signed-in user's customer id.
pub const USER_PREFIX: &str = "user:";

impl Customer {
    /// A visitor's session id: 1–255 printable characters, not starting with `user:`.
    pub fn visitor(raw: &str) -> Result<Self, Invalid> {
        if printable(raw) && !raw.starts_with(USER_PREFIX) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(invalid(
                "X-Lab-Customer",
                format!("1–{KEY_MAX} printable characters, not starting with {USER_PREFIX:?}"),
            ))
        }
    }

    /// The signed-in user whose token names `sub`.
    pub fn user(sub: &str) -> Result<Self, Invalid> {
        let id = format!("{USER_PREFIX}{sub}");
        if printable(sub) && printable(&id) {
            Ok(Self(id))
        } else {
            Err(invalid("sub", format!("1–{KEY_MAX} printable characters")))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The claim scope of this customer's Idempotency-Keys: two customers may use the same key.
    pub fn claim_scope(&self) -> String {
        format!("order:{}", self.0)
    }
}

/// The payment providers the sandbox PSP stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Stripe,
    Paypal,
}

impl Provider {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match raw {
            "stripe" => Ok(Self::Stripe),
            "paypal" => Ok(Self::Paypal),
            _ => Err(invalid("provider", "\"stripe\" or \"paypal\"")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Paypal => "paypal",
        }
    }
}

/// Most lines in one order: a cart, not a bulk import.
pub const LINES_MAX: usize = 20;
/// Most units of one product on a line.
pub const QUANTITY_MAX: i64 = 100;

/// A requested line: a product and how many units, before prices are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    pub product_id: Uuid,
    pub quantity: i32,
}

/// Validates the requested lines: 1–20 of them, each quantity 1–100.
pub fn parse_lines(raw: &[(Uuid, i64)]) -> Result<Vec<Wanted>, Invalid> {
    if raw.is_empty() || raw.len() > LINES_MAX {
        return Err(invalid("lines", format!("between 1 and {LINES_MAX} lines")));
    }
    raw.iter()
        .enumerate()
        .map(|(i, &(product_id, quantity))| {
            if (1..=QUANTITY_MAX).contains(&quantity) {
                Ok(Wanted {
                    product_id,
                    quantity: quantity as i32,
                })
            } else {
                Err(invalid(
                    format!("lines[{i}].quantity"),
                    format!("between 1 and {QUANTITY_MAX}"),
                ))
            }
        })
        .collect()
}

/// Where an order stands. `Pending` until the saga reports a terminal state; terminal states
/// never change again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum OrderStatus {
    Pending,
    Completed,
    /// No stock.
    Rejected,
    /// Payment failed or expired; what was compensated is listed in the outcome.
    Cancelled,
    /// Amount mismatch (refunded) or a step that could not finish: a person looks at it.
    RequiresReview,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Completed => "Completed",
            Self::Rejected => "Rejected",
            Self::Cancelled => "Cancelled",
            Self::RequiresReview => "RequiresReview",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Completed,
            Self::Rejected,
            Self::Cancelled,
            Self::RequiresReview,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    /// The final status for the saga's terminal state `to` (the saga's names match the order's).
    pub fn terminal(to: &str) -> Option<Self> {
        Self::parse(to).filter(|s| *s != Self::Pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visitor_session_cannot_pose_as_a_signed_in_user() {
        assert!(Customer::visitor("session-1").is_ok());
        assert!(Customer::visitor("user:1234").is_err());
        assert!(Customer::visitor("").is_err());
        assert_eq!(Customer::user("1234").unwrap().as_str(), "user:1234");
        assert!(Customer::user("").is_err());
        assert!(Customer::user(&"x".repeat(251)).is_err());
    }

    #[test]
    fn keys_are_one_to_255_printable_characters() {
        assert!(ClaimKey::parse("key", "a").is_ok());
        assert!(ClaimKey::parse("key", &"é".repeat(255)).is_ok());
        assert_eq!(ClaimKey::parse("key", "").unwrap_err().field, "key");
        assert!(ClaimKey::parse("key", &"x".repeat(256)).is_err());
        assert!(ClaimKey::parse("key", "a\nb").is_err());
    }

    #[test]
    fn ttls_are_five_seconds_to_a_day() {
        assert!(Ttl::parse(5).is_ok());
        assert!(Ttl::parse(86_400).is_ok());
        assert_eq!(Ttl::parse(4).unwrap_err().field, "ttl_s");
        assert!(Ttl::parse(86_401).is_err());
    }

    #[test]
    fn lines_are_bounded_and_name_the_bad_quantity() {
        let id = Uuid::nil();
        assert!(parse_lines(&[]).is_err());
        assert!(parse_lines(&vec![(id, 1); 21]).is_err());
        assert_eq!(
            parse_lines(&[(id, 1), (id, 101)]).unwrap_err().field,
            "lines[1].quantity"
        );
        assert_eq!(parse_lines(&[(id, 100)]).unwrap()[0].quantity, 100);
    }

    #[test]
    fn only_terminal_saga_states_are_final_statuses() {
        assert_eq!(
            OrderStatus::terminal("Cancelled"),
            Some(OrderStatus::Cancelled)
        );
        assert_eq!(OrderStatus::terminal("Pending"), None);
        assert_eq!(OrderStatus::terminal("Captured"), None);
        assert!(Provider::parse("stripe").is_ok());
        assert_eq!(Provider::parse("visa").unwrap_err().field, "provider");
    }
}
