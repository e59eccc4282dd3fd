//! The operator's routes over a service's database login, one piece of code every service with a
//! database mounts: `GET /admin/credentials` (source, redacted lease id, TTL left, rotations, the
//! last rotation's stages), `POST /admin/credentials/rotate` (rotate now, answer with the report)
//! and `POST /admin/credentials/ttl` (demo: shorten the lease TTL so rotations come every few
//! seconds); and the demo's bounded variant ([`demo_router`]): `POST /demo/credentials/rotate`,
//! at most one rotation per [`DEMO_ROTATION_GAP`], the logins' names hidden.
//!
//! Who may call them is the service's decision: it wraps [`router`] in its own admin extractor,
//! as with `lab_messaging::admin`.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use lab_http::{Json, Problem};
use serde::Deserialize;

use crate::credentials::{CredentialError, CredentialStatus, Credentials, RotationReport};

/// `GET /credentials`: the same status with the login's name left out, for anybody — the BFF
/// pushes it to the /chaos page. Mount it without the admin check.
pub fn public_router<S: Clone + Send + Sync + 'static>(credentials: Credentials) -> Router<S> {
    Router::new()
        .route("/credentials", get(public_status))
        .with_state(credentials)
}

/// What the public status shows instead of a login's name.
const HIDDEN: &str = "(hidden)";
/// The least time between two rotations a demo may ask for: each leases a login from OpenBao
/// and drains a pool, so a visitor clicking fast must not turn them into a load test.
pub const DEMO_ROTATION_GAP: Duration = Duration::from_secs(5);

/// `POST /demo/credentials/rotate`, with its state; mount behind a check that lets the demo's
/// caller in (e.g. `lab_auth::RequireAdminOr<Demo>`).
pub fn demo_router<S: Clone + Send + Sync + 'static>(credentials: Credentials) -> Router<S> {
    Router::new()
        .route("/demo/credentials/rotate", post(demo_rotate_credentials))
        .with_state(credentials)
}

/// The login's lease and rotations as anybody may see them (the logins' names left out; the lease
/// id is redacted anyway).
#[utoipa::path(get, path = "/credentials", tag = "credentials",
    responses((status = 200, body = CredentialStatus)))]
pub async fn public_status(State(credentials): State<Credentials>) -> Json<CredentialStatus> {
    let mut status = credentials.status();
    status.username = None;
    if let Some(rotation) = status.last_rotation.as_mut() {
        HIDDEN.clone_into(&mut rotation.old_user);
        HIDDEN.clone_into(&mut rotation.new_user);
    }
    Json(status)
}

/// The three routes, with their state; mount behind the service's admin check.
pub fn router<S: Clone + Send + Sync + 'static>(credentials: Credentials) -> Router<S> {
    Router::new()
        .route("/admin/credentials", get(credentials_status))
        .route("/admin/credentials/rotate", post(rotate_credentials))
        .route("/admin/credentials/ttl", post(set_credentials_ttl))
        .with_state(credentials)
}

fn problem(e: CredentialError) -> Problem {
    match e {
        CredentialError::Disabled => Problem::typed(
            StatusCode::CONFLICT,
            "vault-disabled",
            "Leased credentials are disabled",
        )
        .detail("this service uses a static database login (started without OpenBao)"),
        CredentialError::TtlTooShort => Problem::invalid_field("ttl_s", e.to_string()),
        e => {
            tracing::warn!(error = %e, "credential operation failed");
            Problem::unavailable("openbao", e.to_string())
        }
    }
}

/// The login in use and its rotations.
#[utoipa::path(get, path = "/admin/credentials", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = CredentialStatus), (status = 401, body = Problem)))]
pub async fn credentials_status(State(credentials): State<Credentials>) -> Json<CredentialStatus> {
    Json(credentials.status())
}

/// Rotates the login now: lease a new one, swap the pool, drain the old one, revoke it.
#[utoipa::path(post, path = "/admin/credentials/rotate", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = RotationReport), (status = 401, body = Problem),
        (status = 409, body = Problem, description = "static login"),
        (status = 503, body = Problem, description = "OpenBao unreachable")))]
pub async fn rotate_credentials(
    State(credentials): State<Credentials>,
) -> Result<Json<RotationReport>, Problem> {
    credentials.rotate().await.map(Json).map_err(problem)
}

/// Rotates the login now, as `/admin/credentials/rotate` does, at most once per
/// [`DEMO_ROTATION_GAP`] (else 429 with `Retry-After`); the logins' names hidden.
#[utoipa::path(post, path = "/demo/credentials/rotate", tag = "demo", security(("bearer" = [])),
    responses((status = 200, body = RotationReport), (status = 401, body = Problem),
        (status = 403, body = Problem), (status = 409, body = Problem, description = "static login"),
        (status = 429, body = Problem, description = "rotated moments ago"),
        (status = 503, body = Problem, description = "OpenBao unreachable")))]
pub async fn demo_rotate_credentials(
    State(credentials): State<Credentials>,
) -> Result<Json<RotationReport>, Problem> {
    let now_ms = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    let gap_ms = u64::try_from(DEMO_ROTATION_GAP.as_millis()).unwrap_or(u64::MAX);
    if let Some(last) = credentials.status().last_rotation {
        let since = now_ms.saturating_sub(last.started_at_ms);
        if since < gap_ms {
            let wait_s = (gap_ms - since).div_ceil(1_000).max(1);
            return Err(Problem::typed(
                StatusCode::TOO_MANY_REQUESTS,
                "rotated-recently",
                "The login was rotated moments ago",
            )
            .detail(format!("a demo may rotate once per {DEMO_ROTATION_GAP:?}"))
            .header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(wait_s),
            ));
        }
    }
    let mut report = credentials.rotate().await.map_err(problem)?;
    HIDDEN.clone_into(&mut report.old_user);
    HIDDEN.clone_into(&mut report.new_user);
    Ok(Json(report))
}

/// The demo's lease TTL.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct TtlRequest {
    /// Seconds each renewal extends the lease by; leases rotate at twice this age.
    pub ttl_s: u64,
}

/// Demo: renews leases to `ttl_s` and rotates them at twice that age.
#[utoipa::path(post, path = "/admin/credentials/ttl", tag = "admin", security(("bearer" = [])),
    request_body = TtlRequest,
    responses((status = 200, body = CredentialStatus), (status = 401, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn set_credentials_ttl(
    State(credentials): State<Credentials>,
    Json(request): Json<TtlRequest>,
) -> Result<Json<CredentialStatus>, Problem> {
    credentials
        .set_ttl(Duration::from_secs(request.ttl_s))
        .await
        .map_err(problem)?;
    Ok(Json(credentials.status()))
}
