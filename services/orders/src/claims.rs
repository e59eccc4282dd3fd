//! Idempotency via `ON CONFLICT`: the first writer of a key wins, in one statement.
//!
//! ```sql
//! INSERT INTO claims … VALUES (…, $new_id, now() + ttl)
//! ON CONFLICT (scope, key) DO UPDATE SET claim_id = CASE WHEN expired THEN $new_id ELSE old END, …
//! RETURNING claim_id, (xmax = 0) AS inserted, …
//! ```
//!
//! PostgreSQL's unique index decides: of N concurrent writers of one key, one inserts; the others
//! wait for it to commit and then take the conflict path, which returns the winner's row. No
//! read-then-write window exists. `xmax = 0` is true only for a freshly inserted row (the
//! conflict path locks the old row, which sets `xmax`); a retaken *expired* claim also goes
//! through the conflict path, so "this request holds the claim" is `claim_id = $new_id`, and
//! `inserted` tells a first claim from a retake.
//!
//! Why `CASE` rather than `DO UPDATE … WHERE expired`: with a `WHERE` that is false, `RETURNING`
//! yields no row for a live claim, and a follow-up `SELECT` in the same statement runs on a
//! snapshot taken before a concurrent winner committed, so it can miss the row. The `CASE` always
//! updates (rewriting a live claim with its own values) and so always returns the current row.
//!
//! Scopes keep namespaces apart: `claims` for the public API, `order:<customer>` for each
//! customer's `Idempotency-Key`s. The public API is here too: `POST /claims` and
//! `GET /claims/{key}`.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use lab_http::{Json, Path, Problem};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{ClaimKey, Ttl};
use crate::routes::{AppState, db_problem};

/// The scope of claims made through `POST /claims`.
pub const PUBLIC_SCOPE: &str = "claims";

/// The answer to a claim attempt.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimed {
    /// The claim's id: the same for every repeat while it is live.
    pub claim_id: Uuid,
    /// Whether this attempt took the claim (first writer, or an expired claim retaken).
    pub created: bool,
    /// Whether the row was inserted (false for a repeat and for a retake of an expired claim).
    pub inserted: bool,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A claim as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Claim {
    pub claim_id: Uuid,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Seconds since it was claimed (by the database's clock).
    pub age_s: f64,
    /// Whether it has expired (and may be taken again).
    pub expired: bool,
}

/// Claims `key` in `scope` for `ttl`, inside the caller's transaction or on its own connection.
pub async fn claim(
    conn: &mut PgConnection,
    scope: &str,
    key: &ClaimKey,
    ttl: Ttl,
) -> Result<Claimed, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO claims AS c (scope, key, claim_id, expires_at) \
         VALUES ($1, $2, $3, now() + make_interval(secs => $4)) \
         ON CONFLICT (scope, key) DO UPDATE SET \
             claim_id   = CASE WHEN c.expires_at <= now() THEN EXCLUDED.claim_id   ELSE c.claim_id   END, \
             claimed_at = CASE WHEN c.expires_at <= now() THEN EXCLUDED.claimed_at ELSE c.claimed_at END, \
             expires_at = CASE WHEN c.expires_at <= now() THEN EXCLUDED.expires_at ELSE c.expires_at END \
         RETURNING claim_id, claim_id = $3 AS created, (xmax = 0) AS inserted, claimed_at, expires_at",
    )
    .bind(scope)
    .bind(key.as_str())
    .bind(Uuid::now_v7())
    .bind(ttl.seconds() as f64)
    .fetch_one(conn)
    .await
}

/// Reads the claim of `key` in `scope`, live or expired; never creates one.
pub async fn read(
    pool: &PgPool,
    scope: &str,
    key: &ClaimKey,
) -> Result<Option<Claim>, sqlx::Error> {
    sqlx::query_as(
        "SELECT claim_id, claimed_at, expires_at, \
                extract(epoch FROM now() - claimed_at)::float8 AS age_s, \
                expires_at <= now() AS expired \
         FROM claims WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key.as_str())
    .fetch_optional(pool)
    .await
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/claims", post(create_claim))
        .route("/claims/{key}", get(get_claim))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClaim {
    /// 1–255 printable characters.
    key: String,
    /// How long the claim holds: 5–86,400 seconds.
    ttl_s: i64,
}

/// The answer to `POST /claims`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimResult {
    pub key: String,
    pub claim_id: Uuid,
    /// Whether this request took the claim; `false` for every repeat while it is live.
    pub created: bool,
    /// Whether it took over an expired claim (a new id for an old key).
    pub retaken: bool,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// Claims a key: the first writer wins (201); every repeat while the claim is live gets the same
/// claim id (200, `created: false`); an expired claim is taken again with a new id.
#[utoipa::path(post, path = "/claims", tag = "orders", request_body = NewClaim, responses(
    (status = 201, body = ClaimResult), (status = 200, body = ClaimResult), (status = 422, body = Problem)))]
pub async fn create_claim(
    State(state): State<AppState>,
    Json(body): Json<NewClaim>,
) -> Result<Response, Problem> {
    let key = ClaimKey::parse("key", &body.key)?;
    let ttl = Ttl::parse(body.ttl_s)?;
    let mut conn = state.pool.acquire().await.map_err(db_problem)?;
    let claimed = claim(&mut conn, PUBLIC_SCOPE, &key, ttl)
        .await
        .map_err(db_problem)?;
    let status = if claimed.created {
        state.metrics.claims_created.inc();
        StatusCode::CREATED
    } else {
        state.metrics.claims_repeated.inc();
        StatusCode::OK
    };
    let result = ClaimResult {
        key: body.key,
        claim_id: claimed.claim_id,
        created: claimed.created,
        retaken: claimed.created && !claimed.inserted,
        claimed_at: claimed.claimed_at,
        expires_at: claimed.expires_at,
    };
    Ok((status, Json(result)).into_response())
}

/// A claim as `GET /claims/{key}` shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ClaimView {
    pub key: String,
    /// Always true here (an absent claim is a 404).
    pub exists: bool,
    pub claim_id: Uuid,
    pub claimed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Seconds since it was claimed.
    pub age_s: f64,
    /// Whether it expired, so the next claim of the key takes it with a new id.
    pub expired: bool,
}

/// Reads a claim; never creates one.
#[utoipa::path(get, path = "/claims/{key}", tag = "orders", responses(
    (status = 200, body = ClaimView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn get_claim(
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Json<ClaimView>, Problem> {
    let parsed = ClaimKey::parse("key", &key)?;
    let claim = read(&state.pool, PUBLIC_SCOPE, &parsed)
        .await
        .map_err(db_problem)?
        .ok_or_else(|| Problem::not_found(format!("no claim on {key:?}")))?;
    Ok(Json(ClaimView {
        key,
        exists: true,
        claim_id: claim.claim_id,
        claimed_at: claim.claimed_at,
        expires_at: claim.expires_at,
        age_s: claim.age_s,
        expired: claim.expired,
    }))
}
