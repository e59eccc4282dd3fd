//! The one administrator check every service's admin routes share.
//!
//! An administrator presents identity's access token with the `admin` role (when the service
//! verifies identity's tokens), or the operator's break-glass token from the service's settings
//! (`LAB_<SERVICE>__ADMIN_TOKEN`: for tests, scripts and an identity outage). A route a demo
//! needs may also let in a narrow client token with one scope ([`RequireAdminOr`]) — a client
//! token, never a user's, whose empty scope list would otherwise pass any scope check.
//!
//! A service keeps an [`AdminGate`] reachable from its state (`AdminGate: FromRef<State>`) and
//! puts [`RequireAdmin`] (or `RequireAdminOr<Demo>`) in front of its admin routes. Refusals are
//! the same problem+json as the other extractors': no credential or a wrong one is 401, a valid
//! caller without the right is 403.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use http::header;
use http::request::Parts;
use lab_http::Problem;

use crate::extract::{
    Admin, Authenticated, Role as _, Scope, authenticate, bearer, forbidden, unauthorized,
};
use crate::verifier::{AuthError, Verifier};

/// What the administrator check needs: the break-glass token and the token verifier, each
/// optional (a service without identity has only the first; one without a configured token only
/// the second; with neither, nobody is an administrator).
#[derive(Clone, Default)]
pub struct AdminGate {
    /// The operator's break-glass token; `None` when unset or empty.
    break_glass: Option<Arc<str>>,
    /// Checks identity's access tokens, when the service takes them.
    verifier: Option<Verifier>,
}

impl std::fmt::Debug for AdminGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminGate")
            .field("break_glass", &self.break_glass.as_ref().map(|_| "(set)"))
            .field("verifier", &self.verifier.is_some())
            .finish()
    }
}

/// Who passed the gate.
#[derive(Debug, Clone)]
pub enum Grant {
    /// The operator's break-glass token: an administrator.
    BreakGlass,
    /// A verified access token: an administrator only with the `admin` role (boxed: a verified
    /// caller is large beside the break-glass marker).
    Token(Box<Authenticated>),
}

impl Grant {
    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        match self {
            Self::BreakGlass => true,
            Self::Token(caller) => caller.has_role(Admin::NAME),
        }
    }

    /// Whether the caller is a client token granting `scope` (a user's token never is).
    pub fn is_client_with(&self, scope: &str) -> bool {
        match self {
            Self::BreakGlass => false,
            Self::Token(caller) => caller.is_client() && caller.has_scope(scope),
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

impl AdminGate {
    /// A gate with this break-glass token (an empty one counts as none) and verifier.
    pub fn new(break_glass: Option<&str>, verifier: Option<Verifier>) -> Self {
        Self {
            break_glass: break_glass.filter(|t| !t.is_empty()).map(Arc::from),
            verifier,
        }
    }

    fn is_break_glass(&self, token: &str) -> bool {
        self.break_glass
            .as_deref()
            .is_some_and(|expected| constant_time_eq(token.as_bytes(), expected.as_bytes()))
    }

    /// The caller of a request: `None` without an `Authorization` header (a visitor, for routes
    /// that have visitors); 401 for a credential that is neither the break-glass token nor a
    /// token the verifier accepts.
    pub async fn identify(&self, parts: &mut Parts) -> Result<Option<Grant>, Problem> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(None);
        }
        let token = bearer(parts).ok_or_else(|| unauthorized(&AuthError::Missing))?;
        if self.is_break_glass(token) {
            return Ok(Some(Grant::BreakGlass));
        }
        let Some(verifier) = &self.verifier else {
            return Err(unauthorized(&AuthError::NotAccepted));
        };
        let token = token.to_owned();
        let caller = authenticate(parts, verifier, token).await?;
        Ok(Some(Grant::Token(Box::new(caller))))
    }

    /// The caller, who must be present: 401 without an `Authorization` header.
    async fn require(&self, parts: &mut Parts) -> Result<Grant, Problem> {
        self.identify(parts)
            .await?
            .ok_or_else(|| unauthorized(&AuthError::Missing))
    }
}

/// An administrator (role or break-glass token), else 401/403.
#[derive(Debug, Clone)]
pub struct RequireAdmin(pub Grant);

impl<S> FromRequestParts<S> for RequireAdmin
where
    AdminGate: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let grant = AdminGate::from_ref(state).require(parts).await?;
        if grant.is_admin() {
            Ok(Self(grant))
        } else {
            Err(forbidden(
                "only an administrator may use this route".into(),
                None,
            ))
        }
    }
}

/// An administrator, or a client token granting scope `Sc` (the BFF's `demo` token on the one
/// route a demo needs), else 401/403.
#[derive(Debug, Clone)]
pub struct RequireAdminOr<Sc: Scope>(pub Grant, pub PhantomData<Sc>);

impl<Sc: Scope, S> FromRequestParts<S> for RequireAdminOr<Sc>
where
    AdminGate: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let grant = AdminGate::from_ref(state).require(parts).await?;
        if grant.is_admin() || grant.is_client_with(Sc::NAME) {
            Ok(Self(grant, PhantomData))
        } else {
            Err(forbidden(
                format!("this needs an administrator or the {} scope", Sc::NAME),
                Some(Sc::NAME),
            ))
        }
    }
}

/// The scope of the BFF's client token for anonymous demo calls.
pub struct Demo;

impl Scope for Demo {
    const NAME: &'static str = "demo";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    #[test]
    fn an_empty_break_glass_token_lets_nobody_in() {
        let gate = AdminGate::new(Some(""), None);

        assert!(!gate.is_break_glass(""));
        assert!(format!("{gate:?}").contains("None"));
    }

    #[test]
    fn the_break_glass_token_never_shows_in_debug_output() {
        let gate = AdminGate::new(Some("hunter2"), None);

        assert!(gate.is_break_glass("hunter2"));
        assert!(!format!("{gate:?}").contains("hunter2"));
    }
}
