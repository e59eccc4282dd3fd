//! Who is ordering. A signed-in user presents identity's access token (checked by lab-auth:
//! signature, `iss`, `aud`, `exp`, revocation) and is the customer `user:<sub>`; a visitor has
//! no `Authorization` header and is the session the BFF sends in `X-Lab-Customer`. A credential
//! that does not verify is 401: never quietly the anonymous session instead.

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use lab_auth::extract::{bearer, unauthorized};
use lab_auth::{Admin, AuthError, Authenticated, Role as _, Scope as _, Verifier};
use lab_http::Problem;

use crate::domain::Customer;
use crate::routes::AppState;

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Orders' administrators hold the `admin` role; it has no break-glass token.
impl FromRef<AppState> for lab_auth::AdminGate {
    fn from_ref(state: &AppState) -> Self {
        lab_auth::AdminGate::new(None, Some(state.verifier.clone()))
    }
}

/// Header carrying a visitor's session: the BFF sets it from its session cookie.
pub const CUSTOMER_HEADER: &str = "x-lab-customer";

/// The caller of a request: whose orders it places and reads.
#[derive(Debug, Clone)]
pub struct Requester {
    /// The owner of what it places.
    pub customer: Customer,
    /// Holds the `admin` role: may read anyone's order.
    pub admin: bool,
    /// The BFF's client token with the `demo` scope: may ask for a demo's short payment window.
    pub demo: bool,
}

/// The visitor's session from `X-Lab-Customer`: 401 without one, 400 when malformed.
fn visitor(parts: &Parts) -> Result<Customer, Problem> {
    let Some(raw) = parts.headers.get(CUSTOMER_HEADER) else {
        return Err(Problem::new(StatusCode::UNAUTHORIZED)
            .detail("orders belong to a customer: sign in, or send X-Lab-Customer"));
    };
    let raw = raw
        .to_str()
        .map_err(|_| Problem::bad_request("X-Lab-Customer is not visible ASCII"))?;
    Customer::visitor(raw).map_err(|e| Problem::bad_request(e.to_string()))
}

impl FromRequestParts<AppState> for Requester {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Self {
                customer: visitor(parts)?,
                admin: false,
                demo: false,
            });
        }
        if bearer(parts).is_none() {
            return Err(unauthorized(&AuthError::Missing));
        }
        let caller = Authenticated::from_request_parts(parts, state).await?;
        let customer = if caller.is_client() {
            // A service's narrow client token (the BFF's, for anonymous demo calls) is no person:
            // it vouches for the visitor session it names, as the BFF does without a token.
            visitor(parts)?
        } else {
            Customer::user(&caller.sub).map_err(|e| Problem::bad_request(e.to_string()))?
        };
        Ok(Self {
            customer,
            admin: caller.has_role(Admin::NAME),
            demo: caller.is_client() && caller.has_scope(lab_auth::Demo::NAME),
        })
    }
}
