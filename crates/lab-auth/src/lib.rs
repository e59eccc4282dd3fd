//! Authentication for every Lab service: identity's access tokens checked locally.
//!
//! - [`jwt`]: EdDSA-only compact JWTs, signing (identity) and verification (everyone).
//! - [`jwks`]: the published key set and the rate-limited cache that fetches it from identity.
//! - [`revocation`]: revoked JTIs in Redis, followed over pub/sub into a local set.
//! - [`Verifier`]: signature, `iss`, `aud`, `exp`/`nbf` with leeway, revocation, in one call.
//! - [`admin`]: the one administrator check of every service's admin routes (role or
//!   break-glass token; a `demo`-scoped client token where a demo needs the route).
//! - [`extract`]: axum extractors (`Authenticated`, `RequireRole<Admin>`, `RequireScope<_>`)
//!   answering 401/403 problem+json with `WWW-Authenticate`.
//!
//! A service keeps a [`Verifier`] in its state (`Verifier: FromRef<State>`) and takes the
//! extractors in its handlers:
//!
//! ```ignore
//! // settings.auth: AuthSettings (LAB_<SERVICE>__AUTH__JWKS_URL, __ISSUER, __AUDIENCE, …)
//! let verifier = Verifier::start(settings.auth.clone(), &settings.redis, shutdown.clone())?;
//! impl FromRef<AppState> for Verifier { fn from_ref(s: &AppState) -> Self { s.verifier.clone() } }
//! async fn my_orders(RequireUser(caller): RequireUser) -> … { /* caller.sub */ }
//! async fn restock(RequireRole(caller, ..): RequireRole<Admin>) -> … { … }
//! ```
//!
//! Failure modes, chosen deliberately: identity unreachable with no keys cached → 503 (keys
//! cached → tokens keep verifying); Redis unreachable → checks use the revocations already
//! known (a token revoked while a service could not hear about it passes until Redis returns
//! and the subscriber reloads the list, or the token expires).

pub mod admin;
pub mod extract;
pub mod jwks;
pub mod jwt;
pub mod revocation;
mod verifier;

pub use admin::{AdminGate, Demo, Grant, RequireAdmin, RequireAdminOr};
pub use extract::{Admin, Authenticated, RequireRole, RequireScope, RequireUser, Role, Scope};
pub use jwks::{HttpKeySource, Jwk, Jwks, JwksCache, KeySource};
pub use jwt::{Audience, Claims, SigningKey};
pub use revocation::{RevocationError, Revocations};
pub use verifier::{AuthError, AuthSettings, StartError, Verifier};
