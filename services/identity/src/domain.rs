//! Input that has been checked: an [`Email`] or a [`Password`] cannot hold an invalid value.

use lab_http::Problem;

/// Why a field was refused; becomes 422 naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::invalid_field(e.field, e.reason)
    }
}

/// A lower-cased, plausibly deliverable address (RFC 5321 length limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: Option<&str>) -> Result<Self, Invalid> {
        let raw = raw
            .ok_or_else(|| Invalid::new("email", "email is required"))?
            .trim();
        let email = raw.to_lowercase();
        if email.is_empty() {
            return Err(Invalid::new("email", "email is required"));
        }
        if email.chars().count() > 254 {
            return Err(Invalid::new("email", "email is longer than 254 characters"));
        }
        let valid = match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains('@')
                    && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            }
            None => false,
        };
        if !valid {
            return Err(Invalid::new(
                "email",
                "email is not an address like name@example.com",
            ));
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A password within length bounds; never printed.
pub struct Password(String);

/// NIST SP 800-63B: at least 8 characters; the upper bound keeps one hash cheap to compute.
const MIN_PASSWORD: usize = 8;
const MAX_PASSWORD: usize = 256;

impl Password {
    pub fn parse(raw: Option<&str>) -> Result<Self, Invalid> {
        let raw = raw.ok_or_else(|| Invalid::new("password", "password is required"))?;
        let len = raw.chars().count();
        if len < MIN_PASSWORD {
            return Err(Invalid::new(
                "password",
                format!("password must have at least {MIN_PASSWORD} characters"),
            ));
        }
        if len > MAX_PASSWORD {
            return Err(Invalid::new(
                "password",
                format!("password must have at most {MAX_PASSWORD} characters"),
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// Login checks any non-empty password against the stored hash, so a short one is simply
    /// wrong (401) rather than a hint about the rules (422).
    pub fn for_login(raw: Option<&str>) -> Result<Self, Invalid> {
        match raw {
            Some(p) if !p.is_empty() && p.chars().count() <= MAX_PASSWORD => Ok(Self(p.to_owned())),
            Some(p) if !p.is_empty() => Err(Invalid::new("password", "password is too long")),
            _ => Err(Invalid::new("password", "password is required")),
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_is_trimmed_and_lower_cased() {
        assert_eq!(
            Email::parse(Some("  Ada@Example.COM ")).map(|e| e.as_str().to_owned()),
            Ok("ada@example.com".to_owned())
        );
    }

    #[test]
    fn malformed_emails_are_refused_naming_the_field() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "a@b@c.com",
        ] {
            let e = Email::parse(Some(raw)).expect_err(raw);
            assert_eq!(e.field, "email");
        }
    }

    #[test]
    fn a_short_password_is_refused_at_registration_but_only_wrong_at_login() {
        assert!(Password::parse(Some("short")).is_err());
        assert!(Password::for_login(Some("short")).is_ok());
    }
}
