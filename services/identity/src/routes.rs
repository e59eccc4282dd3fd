//! The identity HTTP API: register, login, refresh, client tokens, logout, `/me`, the JWKS;
//! the administrator's routes are in `admin.rs`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use lab_auth::{Jwks, RequireUser, Revocations, Verifier};
use lab_http::{Json, Problem};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::accounts::{self, AccountError, User};
use crate::admin;
use crate::clients::ClientToken;
use crate::domain::{Email, Password};
use crate::keys::KeyRing;
use crate::passwords::Hasher;
use crate::sessions::{self, SessionError, Subject, TokenPair};
use crate::throttle::Throttle;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: KeyRing,
    pub hasher: Hasher,
    pub throttle: Throttle,
    /// Checks identity's own tokens (keys from the ring, revocations from Redis).
    pub verifier: Verifier,
    /// Logins, refreshes, reuse, rotations.
    pub metrics: crate::metrics::IdentityMetrics,
    pub settings: Arc<crate::Settings>,
}

impl FromRef<AppState> for Verifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

impl AppState {
    pub(crate) fn revocations(&self) -> &Revocations {
        self.verifier.revocations()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/register", post(register))
        .route("/login", post(login))
        .route("/token/refresh", post(refresh))
        .route("/token/client", post(client_token))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/admin/keys/rotate", post(admin::rotate_keys))
        .route(
            "/admin/users/{id}/sessions",
            delete(admin::revoke_user_sessions),
        )
        .with_state(state)
}

/// A database failure: logged once here, answered as 503.
pub(crate) fn db_problem(e: &sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable("postgres", lab_db::short_reason(e))
}

pub(crate) fn session_problem(e: SessionError) -> Problem {
    match e {
        SessionError::Db(e) => db_problem(&e),
        SessionError::InvalidRefresh | SessionError::Reused => Problem::typed(
            StatusCode::UNAUTHORIZED,
            "invalid-refresh-token",
            "Invalid refresh token",
        )
        .detail("the refresh token is unknown, expired, revoked or already used; log in again"),
        SessionError::Revocation(e) => {
            tracing::error!(error = %e, "revocation failed");
            Problem::unavailable("redis", "the revocation could not be recorded; try again")
        }
        SessionError::Sign(e) => {
            tracing::error!(error = %e, "signing failed");
            Problem::internal()
        }
    }
}

/// The one answer for a wrong password and an unknown email alike.
fn invalid_credentials() -> Problem {
    Problem::typed(
        StatusCode::UNAUTHORIZED,
        "invalid-credentials",
        "Invalid credentials",
    )
    .detail("the email or the password is wrong")
}

/// Email and password, as a form sends them. Optional here so a missing one is a 422 that
/// names it rather than a serde message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Credentials {
    /// An address like `name@example.com`; compared case-insensitively.
    #[serde(default)]
    email: Option<String>,
    /// 8–256 characters.
    #[serde(default)]
    #[schema(format = Password)]
    password: Option<String>,
}

/// Creates an account.
#[utoipa::path(post, path = "/register", tag = "identity", request_body = Credentials, responses(
    (status = 201, description = "created", body = User),
    (status = 409, description = "the email is taken", body = Problem),
    (status = 422, description = "a field is invalid (named in `field`)", body = Problem),
))]
pub async fn register(
    State(state): State<AppState>,
    Json(body): Json<Credentials>,
) -> Result<Response, Problem> {
    let email = Email::parse(body.email.as_deref())?;
    let password = Password::parse(body.password.as_deref())?;
    let hash = state.hasher.hash(&password).await.map_err(|e| {
        tracing::error!(error = %e, "hashing failed");
        Problem::internal()
    })?;
    let roles = if state.settings.is_admin_email(email.as_str()) {
        vec!["admin".to_owned()]
    } else {
        Vec::new()
    };
    match accounts::create(&state.pool, &email, &hash, &roles).await {
        Ok(user) => Ok((StatusCode::CREATED, Json(user)).into_response()),
        Err(AccountError::Taken) => Err(Problem::typed(
            StatusCode::CONFLICT,
            "email-taken",
            "Email already registered",
        )
        .detail("an account with this email exists; log in instead")
        .with("field", "email")),
        Err(AccountError::Db(e)) => Err(db_problem(&e)),
    }
}

/// The caller's address for throttling: with `trust_forwarded_for`, the *last* `X-Forwarded-For`
/// entry, the one the proxy in front of identity (the BFF) appended; earlier entries come from
/// the client and could be anything.
fn client_address(headers: &HeaderMap, trust_forwarded_for: bool) -> String {
    let forwarded = trust_forwarded_for
        .then(|| headers.get("x-forwarded-for"))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= 64);
    forwarded.unwrap_or("direct").to_owned()
}

/// Exchanges email and password for a token pair.
#[utoipa::path(post, path = "/login", tag = "identity", request_body = Credentials, responses(
    (status = 200, description = "logged in", body = TokenPair),
    (status = 401, description = "wrong email or password (the same answer for both)", body = Problem),
    (status = 422, description = "a field is missing", body = Problem),
    (status = 429, description = "too many attempts; see Retry-After", body = Problem),
))]
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Credentials>,
) -> Result<Json<TokenPair>, Problem> {
    let email = Email::parse(body.email.as_deref())?;
    let password = Password::for_login(body.password.as_deref())?;
    let address = client_address(&headers, state.throttle.settings().trust_forwarded_for);
    if let Err(throttled) = state
        .throttle
        .before_attempt(&address, email.as_str())
        .await
    {
        state.metrics.logins_throttled.inc();
        let seconds = throttled.retry_after.as_secs();
        return Err(Problem::typed(
            StatusCode::TOO_MANY_REQUESTS,
            "login-throttled",
            "Too many login attempts",
        )
        .detail(format!("wait {seconds} s before trying again"))
        .header(header::RETRY_AFTER, HeaderValue::from(seconds)));
    }
    let found = accounts::by_email(&state.pool, &email)
        .await
        .map_err(|e| db_problem(&e))?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), Some(hash)),
        None => (None, None),
    };
    let matched = state.hasher.verify(&password, hash).await;
    let Some(user) = user.filter(|_| matched) else {
        state.throttle.failed(email.as_str()).await;
        state.metrics.logins_failed.inc();
        return Err(invalid_credentials());
    };
    state.throttle.succeeded(email.as_str()).await;
    let subject = Subject {
        id: user.id,
        roles: user.roles,
    };
    let pair = sessions::start(&state.pool, &state.keys, &state.settings.tokens, &subject)
        .await
        .map_err(session_problem)?;
    state.metrics.logins.inc();
    Ok(Json(pair))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct RefreshRequest {
    /// The refresh token of the last pair.
    #[serde(default)]
    refresh_token: Option<String>,
}

/// Trades a refresh token for the next pair; a reused token ends the whole session.
#[utoipa::path(post, path = "/token/refresh", tag = "identity", request_body = RefreshRequest, responses(
    (status = 200, description = "the next pair", body = TokenPair),
    (status = 401, description = "unknown, expired, revoked or reused", body = Problem),
    (status = 422, description = "refresh_token is missing", body = Problem),
))]
pub async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenPair>, Problem> {
    let token = body
        .refresh_token
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or_else(|| Problem::invalid_field("refresh_token", "refresh_token is required"))?;
    let refreshed = sessions::refresh(
        &state.pool,
        &state.keys,
        state.revocations(),
        &state.settings.tokens,
        &token,
    )
    .await;
    match refreshed {
        Ok(pair) => {
            state.metrics.refreshes.inc();
            Ok(Json(pair))
        }
        Err(e) => {
            if matches!(e, SessionError::Reused) {
                state.metrics.refresh_reuse.inc();
            }
            Err(session_problem(e))
        }
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ClientCredentials {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
}

/// Issues the configured client a narrow token (its scopes only, no roles, minutes long).
#[utoipa::path(post, path = "/token/client", tag = "identity", request_body = ClientCredentials, responses(
    (status = 200, description = "a client token", body = ClientToken),
    (status = 401, description = "unknown client or wrong secret", body = Problem),
    (status = 422, description = "a field is missing", body = Problem),
))]
pub async fn client_token(
    State(state): State<AppState>,
    Json(body): Json<ClientCredentials>,
) -> Result<Json<ClientToken>, Problem> {
    let id = body
        .client_id
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Problem::invalid_field("client_id", "client_id is required"))?;
    let secret = body
        .client_secret
        .filter(|v| !v.is_empty())
        .ok_or_else(|| Problem::invalid_field("client_secret", "client_secret is required"))?;
    let client = &state.settings.client;
    if !client.authenticates(&id, &secret) {
        return Err(
            Problem::typed(StatusCode::UNAUTHORIZED, "invalid-client", "Invalid client")
                .detail("the client id or secret is wrong"),
        );
    }
    client
        .issue(&state.keys, &state.settings.tokens.issuer)
        .map(Json)
        .map_err(|e| {
            tracing::error!(error = %e, "signing a client token failed");
            Problem::internal()
        })
}

/// Ends the caller's session: revokes this access token and its refresh-token family.
#[utoipa::path(post, path = "/logout", tag = "identity", security(("bearer" = [])), responses(
    (status = 204, description = "logged out"),
    (status = 401, description = "no valid token", body = Problem),
))]
pub async fn logout(
    State(state): State<AppState>,
    RequireUser(caller): RequireUser,
) -> Result<StatusCode, Problem> {
    let claims = &caller.claims;
    state
        .revocations()
        .revoke(&claims.jti, claims.exp)
        .await
        .map_err(|e| session_problem(e.into()))?;
    if let Some(family) = claims.sid.as_deref().and_then(|s| Uuid::parse_str(s).ok()) {
        sessions::revoke_family(&state.pool, state.revocations(), family)
            .await
            .map_err(session_problem)?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's account.
#[utoipa::path(get, path = "/me", tag = "identity", security(("bearer" = [])), responses(
    (status = 200, description = "the caller", body = User),
    (status = 401, description = "no valid token", body = Problem),
))]
pub async fn me(
    State(state): State<AppState>,
    RequireUser(caller): RequireUser,
) -> Result<Json<User>, Problem> {
    let id = Uuid::parse_str(&caller.sub)
        .map_err(|_| Problem::new(StatusCode::FORBIDDEN).detail("this token is not a user's"))?;
    accounts::by_id(&state.pool, id)
        .await
        .map_err(|e| db_problem(&e))?
        .map(Json)
        .ok_or_else(|| Problem::not_found("the account no longer exists"))
}

/// The public keys that verify identity's tokens: the current one and, after a rotation, the
/// previous one.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "identity", responses(
    (status = 200, description = "the key set", body = Jwks),
))]
pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut response = Json(state.keys.current().jwks()).into_response();
    // Short: services refetch on an unknown kid anyway; this only spares repeated fetches.
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_is_the_hop_the_proxy_appended_not_what_the_client_claims() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 203.0.113.9"),
        );

        assert_eq!(client_address(&headers, true), "203.0.113.9");
        assert_eq!(client_address(&headers, false), "direct");
        assert_eq!(client_address(&HeaderMap::new(), true), "direct");
    }
}
