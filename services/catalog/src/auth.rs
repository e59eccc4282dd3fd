//! Who is calling catalog. An administrator presents identity's access token with the `admin`
//! role (checked by lab-auth: signature, `iss`, `aud`, `exp`, revocation), or the operator's
//! break-glass token from settings (`LAB_CATALOG__ADMIN_TOKEN`: for tests, demos and an identity
//! outage). Without an `Authorization` header the caller is a visitor, who may change only demo
//! products. Any other credential is refused with 401, never treated as a visitor.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use lab_auth::extract::{bearer, forbidden, unauthorized};
use lab_auth::{Admin, AuthError, Authenticated, Role as _, Verifier};
use lab_http::Problem;

use crate::routes::AppState;

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The caller of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// Holds the `admin` role, or presented the break-glass token.
    pub admin: bool,
}

impl Caller {
    /// 403 (with a `WWW-Authenticate: Bearer … insufficient_scope` challenge) unless an
    /// administrator.
    pub fn require_admin(&self, what: &str) -> Result<(), Problem> {
        if self.admin {
            Ok(())
        } else {
            Err(forbidden(format!("only an administrator may {what}"), None))
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

/// Whether `token` is the operator's break-glass token (never, when none is configured).
fn is_break_glass(state: &AppState, token: &str) -> bool {
    state.settings.admin_token.as_ref().is_some_and(|t| {
        !t.expose().is_empty() && constant_time_eq(token.as_bytes(), t.expose().as_bytes())
    })
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Self { admin: false });
        }
        let token = bearer(parts).ok_or_else(|| unauthorized(&AuthError::Missing))?;
        if is_break_glass(state, token) {
            return Ok(Self { admin: true });
        }
        let user = Authenticated::from_request_parts(parts, state).await?;
        Ok(Self {
            admin: user.has_role(Admin::NAME),
        })
    }
}

/// Only an administrator gets past: the guard of the shared admin routes (`lab_db::admin`).
/// No credential is 401, a visitor's or customer's is 403.
#[derive(Debug, Clone, Copy)]
pub struct RequireAdmin;

impl FromRequestParts<AppState> for RequireAdmin {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Err(unauthorized(&AuthError::Missing));
        }
        Caller::from_request_parts(parts, state)
            .await?
            .require_admin("manage the database credentials")?;
        Ok(Self)
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
