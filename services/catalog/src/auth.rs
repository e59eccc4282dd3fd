//! Who is calling. Until identity's JWTs reach the services (the identity issue), the
//! administrator is whoever presents the operator's admin token as a bearer token; everyone else
//! is a visitor, who may change only demo products.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use lab_http::Problem;

use crate::routes::AppState;

/// The caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Presented the administrator's token.
    pub admin: bool,
}

impl Caller {
    pub fn require_admin(&self, what: &str) -> Result<(), Problem> {
        if self.admin {
            Ok(())
        } else {
            Err(Problem::new(StatusCode::FORBIDDEN)
                .detail(format!("only an administrator may {what}")))
        }
    }
}

/// Compares in time independent of where the inputs differ, so the token cannot be guessed
/// byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let admin = match (presented, &state.settings.admin_token) {
            (Some(token), Some(expected)) if !expected.expose().is_empty() => {
                if constant_time_eq(token.as_bytes(), expected.expose().as_bytes()) {
                    true
                } else {
                    return Err(Problem::new(StatusCode::UNAUTHORIZED)
                        .detail("the bearer token is not valid"));
                }
            }
            _ => false,
        };
        Ok(Self { admin })
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
