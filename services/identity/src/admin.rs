//! The administrator's routes: rotating the signing key and ending all of a user's sessions.
//! Both are security events: logged under the `security` target and kept in `security_events`.

use std::time::Duration;

use axum::extract::State;
use lab_auth::{Admin, RequireRole};
use lab_http::{Json, Path, Problem};
use serde::Serialize;
use uuid::Uuid;

use crate::routes::{AppState, db_problem, session_problem};
use crate::sessions;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rotated {
    /// Signs every token from now on.
    pub kid: String,
    /// The key just retired; still published while its tokens can be alive.
    pub previous_kid: String,
}

/// Rotates the signing key (administrators only).
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", security(("bearer" = [])), responses(
    (status = 200, description = "rotated", body = Rotated),
    (status = 401, description = "no valid token", body = Problem),
    (status = 403, description = "not an administrator", body = Problem),
    (status = 503, description = "OpenBao is unreachable", body = Problem),
))]
pub async fn rotate_keys(
    State(state): State<AppState>,
    RequireRole(caller, ..): RequireRole<Admin>,
) -> Result<Json<Rotated>, Problem> {
    // A retired key stays published while a token it signed can still be accepted anywhere:
    // the token lifetime plus the verifiers' default clock leeway.
    let lifetime = state.settings.tokens.access_ttl_s.max(0) as u64
        + lab_auth::AuthSettings::default().leeway_s;
    let rotated = state.keys.rotate(Duration::from_secs(lifetime)).await;
    let (kid, previous_kid) = rotated.map_err(|e| {
        tracing::error!(error = %e, "key rotation failed");
        Problem::unavailable("openbao", e.to_string())
    })?;
    state.metrics.key_rotations.inc();
    tracing::warn!(target: "security", by = %caller.sub, %kid, %previous_kid, "signing key rotated");
    let by = Uuid::parse_str(&caller.sub).ok();
    let detail = serde_json::json!({ "kid": kid, "previous_kid": previous_kid });
    if let Err(e) = sessions::record_event(&state.pool, "key_rotated", by, detail).await {
        tracing::error!(error = %e, "could not record the key rotation event");
    }
    Ok(Json(Rotated { kid, previous_kid }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Sessions that were live and are now ended.
    pub sessions: u64,
}

/// Ends every session of a user, access tokens included (administrators only).
#[utoipa::path(delete, path = "/admin/users/{id}/sessions", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "the user")),
    responses(
        (status = 200, description = "revoked", body = Revoked),
        (status = 400, description = "the id is not a UUID", body = Problem),
        (status = 401, description = "no valid token", body = Problem),
        (status = 403, description = "not an administrator", body = Problem),
    ))]
pub async fn revoke_user_sessions(
    State(state): State<AppState>,
    RequireRole(caller, ..): RequireRole<Admin>,
    Path(user): Path<Uuid>,
) -> Result<Json<Revoked>, Problem> {
    let sessions = sessions::revoke_user(&state.pool, state.revocations(), user)
        .await
        .map_err(session_problem)?;
    tracing::warn!(target: "security", by = %caller.sub, user = %user, sessions, "all sessions of a user revoked");
    let by = serde_json::json!({ "by": caller.sub, "sessions": sessions });
    sessions::record_event(&state.pool, "sessions_revoked_by_admin", Some(user), by)
        .await
        .map_err(|e| db_problem(&e))?;
    Ok(Json(Revoked { sessions }))
}
