//! Who is calling catalog. An administrator passes lab-auth's one admin check
//! ([`lab_auth::AdminGate`]: identity's token with the `admin` role, or the operator's
//! break-glass token `LAB_CATALOG__ADMIN_TOKEN`). Without an `Authorization` header the caller is
//! a visitor, who may change only demo products. Any other credential is refused with 401, never
//! treated as a visitor.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use lab_auth::extract::forbidden;
use lab_auth::{AdminGate, Verifier};
use lab_http::Problem;

use crate::routes::AppState;

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl FromRef<AppState> for AdminGate {
    fn from_ref(state: &AppState) -> Self {
        state.admin.clone()
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let grant = AdminGate::from_ref(state).identify(parts).await?;
        Ok(Self {
            admin: grant.is_some_and(|g| g.is_admin()),
        })
    }
}
