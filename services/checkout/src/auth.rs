//! Who may read the admin views. Until identity's JWTs reach the services, the administrator is
//! whoever presents the operator's admin token (`Settings::admin_token`) as a bearer token — the
//! catalog's approach (services/catalog/src/auth.rs), repeated here until lab-auth replaces both.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use lab_http::Problem;

use crate::routes::AppState;

/// A caller that presented the administrator's token; extracting it refuses everyone else.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// Compares in time independent of where the inputs differ, so the token cannot be guessed
/// byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Admin {
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
        let expected = state
            .admin_token
            .as_ref()
            .map(|t| t.expose())
            .filter(|t| !t.is_empty());
        match (presented, expected) {
            (Some(token), Some(expected))
                if constant_time_eq(token.as_bytes(), expected.as_bytes()) =>
            {
                Ok(Self)
            }
            (Some(_), _) => {
                Err(Problem::new(StatusCode::UNAUTHORIZED).detail("the bearer token is not valid"))
            }
            (None, _) => Err(Problem::new(StatusCode::UNAUTHORIZED)
                .detail("the admin list needs the administrator's bearer token")
                .header(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                )),
        }
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
