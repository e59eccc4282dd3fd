//! Who may use the admin routes. Until identity's JWTs reach the services, the administrator is
//! whoever presents the operator's admin token (`Settings::admin_token`) as a bearer token — the
//! catalog's and checkout's approach (services/checkout/src/auth.rs), repeated here until
//! lab-auth replaces them all.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use lab_http::Problem;
use subtle::ConstantTimeEq;

use crate::routes::AppState;

/// A caller that presented the administrator's token; extracting it refuses everyone else.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

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
            // Constant time, so the token cannot be guessed byte by byte from response times.
            (Some(token), Some(expected))
                if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) =>
            {
                Ok(Self)
            }
            (Some(_), _) => {
                Err(Problem::new(StatusCode::UNAUTHORIZED).detail("the bearer token is not valid"))
            }
            (None, _) => Err(Problem::new(StatusCode::UNAUTHORIZED)
                .detail("the admin routes need the administrator's bearer token")
                .header(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                )),
        }
    }
}
