//! Route-level authorization as axum extractors.
//!
//! A handler that takes [`Authenticated`] runs only for a valid, unrevoked token; one that takes
//! [`RequireRole<Admin>`] or [`RequireScope<S>`] also needs the role or scope; [`RequireUser`]
//! refuses the narrow client tokens identity issues for anonymous demo calls (a user's token has
//! no scope list and is limited by its roles; a client token grants only its scopes). Refusals are
//! problem+json: 401 with `WWW-Authenticate: Bearer … error="invalid_token"` (RFC 6750), 403 with
//! `error="insufficient_scope"`, 503 when the keys cannot be fetched at all. The verified caller is
//! kept in the request's extensions, so stacking extractors verifies once.

use std::marker::PhantomData;

use axum::extract::{FromRef, FromRequestParts};
use http::request::Parts;
use http::{HeaderValue, StatusCode, header};
use lab_http::Problem;

use crate::jwt::Claims;
use crate::verifier::{AuthError, Verifier};

/// The realm named in every challenge.
const REALM: &str = "lab";

/// A caller whose token verified.
#[derive(Debug, Clone)]
pub struct Authenticated {
    /// The subject: a user id, or a service client id.
    pub sub: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    /// Everything the token said.
    pub claims: Claims,
    /// The raw token, for handlers that forward it.
    pub token: String,
}

impl Authenticated {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Whether the token grants `scope`. A user's token carries no scope list and is limited
    /// by its roles instead; a scoped (service) token grants only what it lists.
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.is_empty() || self.scopes.iter().any(|s| s == scope)
    }

    /// Whether this is a scoped client token (a service's, for anonymous demo calls) rather
    /// than a user's.
    pub fn is_client(&self) -> bool {
        !self.scopes.is_empty()
    }

    /// 403 unless the caller has `role`.
    pub fn require_role(&self, role: &str) -> Result<(), Problem> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(forbidden(format!("this needs the {role} role"), None))
        }
    }

    /// 403 unless the token grants `scope`.
    pub fn require_scope(&self, scope: &str) -> Result<(), Problem> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(forbidden(
                format!("this needs the {scope} scope"),
                Some(scope),
            ))
        }
    }
}

fn challenge(value: String) -> HeaderValue {
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer realm=\"lab\""))
}

/// The 401 (or 503) for a refused token.
pub fn unauthorized(error: &AuthError) -> Problem {
    if let AuthError::KeysUnavailable(why) = error {
        tracing::warn!(error = %why, "cannot verify tokens: no signing keys");
        return Problem::unavailable("identity", "the token signing keys cannot be fetched");
    }
    let value = match error {
        AuthError::Missing => format!("Bearer realm=\"{REALM}\""),
        // The description comes from our own messages: never a quote or control character.
        other => format!(
            "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
            other.to_string().replace('"', "'")
        ),
    };
    Problem::typed(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "Authentication required",
    )
    .detail(error.to_string())
    .header(header::WWW_AUTHENTICATE, challenge(value))
}

/// The 403 for a valid caller without the right.
pub fn forbidden(detail: String, scope: Option<&str>) -> Problem {
    let mut value = format!("Bearer realm=\"{REALM}\", error=\"insufficient_scope\"");
    if let Some(scope) = scope {
        value.push_str(&format!(", scope=\"{scope}\""));
    }
    Problem::typed(StatusCode::FORBIDDEN, "forbidden", "Not allowed")
        .detail(detail)
        .header(header::WWW_AUTHENTICATE, challenge(value))
}

/// The bearer token of a request, if it sent one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for Authenticated
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(|| unauthorized(&AuthError::Missing))?;
        let token = token.to_owned();
        authenticate(parts, &Verifier::from_ref(state), token).await
    }
}

/// The caller presenting `token` (the request's [`bearer`] token), verified once per request:
/// later extractors of the same request reuse the first answer.
pub(crate) async fn authenticate(
    parts: &mut Parts,
    verifier: &Verifier,
    token: String,
) -> Result<Authenticated, Problem> {
    if let Some(done) = parts.extensions.get::<Authenticated>() {
        return Ok(done.clone());
    }
    let claims = verifier.verify(&token).await.map_err(|e| {
        tracing::info!(reason = %e, "token refused");
        unauthorized(&e)
    })?;
    let caller = Authenticated {
        sub: claims.sub.clone(),
        roles: claims.roles.clone(),
        scopes: claims.scope.split_whitespace().map(str::to_owned).collect(),
        token,
        claims,
    };
    parts.extensions.insert(caller.clone());
    Ok(caller)
}

/// A role a route can demand, as a type: `RequireRole<Admin>`.
pub trait Role: Send + Sync {
    const NAME: &'static str;
}

/// The administrator role.
pub struct Admin;

impl Role for Admin {
    const NAME: &'static str = "admin";
}

/// An [`Authenticated`] caller holding role `R`, else 403.
pub struct RequireRole<R: Role>(pub Authenticated, pub PhantomData<R>);

impl<R: Role, S> FromRequestParts<S> for RequireRole<R>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        caller.require_role(R::NAME)?;
        Ok(Self(caller, PhantomData))
    }
}

/// A scope a route can demand, as a type: `RequireScope<DemoScope>`.
pub trait Scope: Send + Sync {
    const NAME: &'static str;
}

/// An [`Authenticated`] caller whose token grants scope `S`, else 403.
pub struct RequireScope<Sc: Scope>(pub Authenticated, pub PhantomData<Sc>);

impl<Sc: Scope, S> FromRequestParts<S> for RequireScope<Sc>
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        caller.require_scope(Sc::NAME)?;
        Ok(Self(caller, PhantomData))
    }
}

/// An [`Authenticated`] *user*: a scoped client token (however valid) gets 403. For routes that
/// act on a person's behalf (their orders, their account).
pub struct RequireUser(pub Authenticated);

impl<S> FromRequestParts<S> for RequireUser
where
    Verifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = Authenticated::from_request_parts(parts, state).await?;
        if caller.is_client() {
            return Err(forbidden(
                "this needs a user's token, not a client's".into(),
                None,
            ));
        }
        Ok(Self(caller))
    }
}
