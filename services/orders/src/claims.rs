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
//! customer's `Idempotency-Key`s.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::{ClaimKey, Ttl};

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
