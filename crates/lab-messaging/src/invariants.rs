//! The messaging half of every service's `GET /invariants` (ARCHITECTURE.md §8): the outbox
//! drains and no message was given up on. One piece of code, so every service judges its outbox
//! and dead letters the same way; each service adds its own business checks beside it.

use lab_http::Problem;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{MessagingError, outbox};

/// Offending ids listed per check: enough to start an investigation, small enough that a broken
/// invariant over thousands of rows still answers in one small document.
pub const MAX_IDS: i64 = 20;

/// A pending message older than this means the relay is not draining: the relay polls every
/// few hundred milliseconds and retries a failed publish within seconds, so 30 s of backlog
/// outlives any transient broker hiccup but not a stuck or paused relay.
pub const STUCK_AFTER_MS: u64 = 30_000;

/// The outbox drains: nothing pending, or the oldest pending message is young and the relays run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxDrains {
    /// Whether the invariant holds.
    pub held: bool,
    /// Messages written but not yet confirmed by the broker.
    pub pending: i64,
    /// Age of the oldest of them in milliseconds; 0 when none.
    pub oldest_pending_age_ms: u64,
    /// The age past which a pending message counts as stuck ([`STUCK_AFTER_MS`]).
    pub stuck_after_ms: u64,
    /// Whether the relays are paused (an operator's or a chaos run's choice).
    pub paused: bool,
}

/// No message was given up on: every dead letter has been replayed since it last died.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeadLetterCount {
    /// Whether the invariant holds.
    pub held: bool,
    /// Dead letters not replayed since they last died.
    pub outstanding: i64,
    /// Every dead letter ever recorded, replayed or not.
    pub total: i64,
    /// The outstanding ones' message ids, newest first, at most [`MAX_IDS`].
    pub message_ids: Vec<Uuid>,
}

/// Both messaging checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessagingInvariants {
    /// The outbox drains.
    pub outbox: OutboxDrains,
    /// No message given up on.
    pub dead_letters: DeadLetterCount,
}

impl MessagingInvariants {
    /// Whether both hold.
    pub fn held(&self) -> bool {
        self.outbox.held && self.dead_letters.held
    }
}

/// [`check`] for a route: a failure is logged once here and answered 503 (the database, not the
/// request, is at fault).
pub async fn for_route(pool: &PgPool) -> Result<MessagingInvariants, Problem> {
    check(pool).await.map_err(|e| {
        tracing::error!(error = %e, "reading the outbox and dead letters failed");
        Problem::unavailable("postgres", e.to_string())
    })
}

/// Reads both checks from the pool's schema.
pub async fn check(pool: &PgPool) -> Result<MessagingInvariants, MessagingError> {
    let status = outbox::status(pool).await?;
    let oldest_pending_age_ms =
        u64::try_from(status.oldest_pending_age.as_millis()).unwrap_or(u64::MAX);
    let outbox = OutboxDrains {
        held: status.pending == 0 || (!status.paused && oldest_pending_age_ms < STUCK_AFTER_MS),
        pending: status.pending,
        oldest_pending_age_ms,
        stuck_after_ms: STUCK_AFTER_MS,
        paused: status.paused,
    };
    // A replayed letter that died again has a `dead_at` after its `replayed_at`.
    let (outstanding, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE replayed_at IS NULL OR dead_at > replayed_at), count(*) \
         FROM lab_dead_letters",
    )
    .fetch_one(pool)
    .await?;
    let message_ids: Vec<Uuid> = sqlx::query_scalar(
        "SELECT message_id FROM lab_dead_letters \
         WHERE replayed_at IS NULL OR dead_at > replayed_at \
         ORDER BY dead_at DESC, id DESC LIMIT $1",
    )
    .bind(MAX_IDS)
    .fetch_all(pool)
    .await?;
    Ok(MessagingInvariants {
        outbox,
        dead_letters: DeadLetterCount {
            held: outstanding == 0,
            outstanding,
            total,
            message_ids,
        },
    })
}
