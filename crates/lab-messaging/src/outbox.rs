//! The transactional outbox: a message is written in the same transaction as the business change
//! that caused it, so both commit or neither does. The [`Relay`](crate::Relay) publishes it later
//! (at-least-once); consumers dedupe by message id.
//!
//! ```ignore
//! let mut tx = lab_db::begin(&pool).await?;
//! sqlx::query("UPDATE inventory SET on_hand = on_hand - 1 WHERE id = $1").bind(id).execute(&mut *tx).await?;
//! outbox::enqueue(&mut tx, &Envelope::new("catalog.stock-reserved", payload)).await?;
//! tx.commit().await?; // the NOTIFY fires here and wakes a relay
//! ```
//!
//! Also here: the admin view of the outbox and the durable pause flag every relay honours.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde::Serialize;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::{PgConnection, PgPool, Postgres};
use uuid::Uuid;

use crate::{Envelope, MessagingError};

/// Prefix of the NOTIFY channel; the schema name follows, so relays of services sharing one
/// database only wake for their own rows. Macros so that the statements below can spell it as
/// a literal.
macro_rules! channel_prefix {
    () => {
        "lab_outbox."
    };
}
macro_rules! notify_sql {
    () => {
        concat!(
            "pg_notify('",
            channel_prefix!(),
            "' || current_schema(), '')"
        )
    };
}
const CHANNEL_PREFIX: &str = channel_prefix!();

/// Whether `lab_relay_control`'s row holds the relays now: paused, with no end or an end still
/// ahead (an ended demo pause counts as lifted before anyone clears it). One spelling for the
/// claim and the status.
macro_rules! paused_now {
    () => {
        "paused AND (resume_at IS NULL OR resume_at > now())"
    };
}

/// The call that wakes this schema's relays; PostgreSQL delivers it when the transaction
/// commits. A statement that writes outbox rows selects it, so the rows and the wake-up are one
/// round trip.
pub const NOTIFY_SQL: &str = notify_sql!();

/// Writes `envelope` to the outbox inside the caller's transaction (routing key = its type) and
/// notifies the relays, which PostgreSQL delivers only when the transaction commits. One
/// statement: the insert and the notification make one round trip.
pub async fn enqueue(conn: &mut PgConnection, envelope: &Envelope) -> Result<(), MessagingError> {
    sqlx::query(concat!(
        "WITH written AS (INSERT INTO lab_outbox (message_id, routing_key, envelope) \
                          VALUES ($1, $2, $3)) \
         SELECT ",
        notify_sql!()
    ))
    .bind(envelope.message_id)
    .bind(&envelope.kind)
    .bind(sqlx::types::Json(envelope))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`enqueue`] for several messages at once, in one statement; they are published in the
/// order given.
pub async fn enqueue_all(
    conn: &mut PgConnection,
    envelopes: &[Envelope],
) -> Result<(), MessagingError> {
    match envelopes {
        [] => return Ok(()),
        [one] => return enqueue(conn, one).await,
        _ => {}
    }
    static SQL: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH written AS ({}) SELECT {NOTIFY_SQL}",
            insert_rows_sql(1)
        )
    });
    Rows::new(envelopes)
        .bind(sqlx::query(SQL.as_str()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// An `INSERT` of the outbox rows that [`Rows::bind`] binds as parameters `$first`,
/// `$first + 1` and `$first + 2`, for a caller folding its outbox rows into a statement of its
/// own (a data-modifying `WITH`, selecting [`NOTIFY_SQL`]). It ends with its `FROM` clause, so
/// the caller may append a `WHERE` (e.g. to write nothing when its own update found no row).
/// `unnest` yields the rows in array order, so the identity ids (the publish order) follow the
/// order given.
pub fn insert_rows_sql(first: usize) -> String {
    let (ids, keys, bodies) = (first, first + 1, first + 2);
    format!(
        "INSERT INTO lab_outbox (message_id, routing_key, envelope) \
         SELECT * FROM unnest(${ids}::uuid[], ${keys}::text[], ${bodies}::jsonb[])"
    )
}

/// Envelopes as the three arrays [`insert_rows_sql`] unnests.
pub struct Rows<'a> {
    ids: Vec<Uuid>,
    keys: Vec<&'a str>,
    bodies: Vec<sqlx::types::Json<&'a Envelope>>,
}

impl<'a> Rows<'a> {
    pub fn new(envelopes: &'a [Envelope]) -> Self {
        Self {
            ids: envelopes.iter().map(|e| e.message_id).collect(),
            keys: envelopes.iter().map(|e| e.kind.as_str()).collect(),
            bodies: envelopes.iter().map(sqlx::types::Json).collect(),
        }
    }

    /// Binds the ids, routing keys and bodies, in that order, as `query`'s next three
    /// parameters.
    pub fn bind<'q>(
        &self,
        query: Query<'q, Postgres, PgArguments>,
    ) -> Query<'q, Postgres, PgArguments> {
        query.bind(&self.ids).bind(&self.keys).bind(&self.bodies)
    }
}

/// Wakes the relays of this schema (delivered at commit when inside a transaction).
async fn notify(conn: &mut PgConnection) -> Result<(), MessagingError> {
    sqlx::query(concat!("SELECT ", notify_sql!()))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The NOTIFY channel of the pool's schema.
pub(crate) async fn channel(pool: &PgPool) -> Result<String, MessagingError> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(pool)
        .await?;
    Ok(format!("{CHANNEL_PREFIX}{schema}"))
}

/// One claimed row on its way to the broker.
pub(crate) struct Pending {
    /// Row id: the publish order, and what marks it sent.
    pub id: i64,
    /// The message's id (from its column, so even a row whose JSON no longer decodes has one).
    pub message_id: Uuid,
    /// Exchange routing key (the message type).
    pub routing_key: String,
    /// The envelope's JSON exactly as stored: published verbatim, so a row that no longer
    /// decodes as an [`Envelope`] still goes out and is dead-lettered by its consumer instead of
    /// blocking the relay.
    pub body: Vec<u8>,
    /// Its AMQP properties.
    pub properties: BasicProperties,
    /// When its transaction wrote it (commit follows within the transaction's lifetime).
    pub created_at: DateTime<Utc>,
}

/// [`claim`]'s statement; `$1` is the batch size.
pub(crate) const CLAIM: &str = concat!(
    "WITH claimed AS MATERIALIZED ( \
         SELECT id, message_id, routing_key, envelope::text AS envelope, created_at \
         FROM lab_outbox WHERE sent_at IS NULL ORDER BY id LIMIT $1 \
         FOR UPDATE SKIP LOCKED), \
     control AS ( \
         SELECT ",
    paused_now!(),
    " AS paused \
         FROM lab_relay_control WHERE singleton AND EXISTS (SELECT FROM claimed) \
         FOR SHARE) \
     SELECT c.id, c.message_id, c.routing_key, c.envelope, c.created_at, control.paused \
     FROM claimed c CROSS JOIN control ORDER BY c.id"
);

/// Claims up to `limit` unsent rows in id order, unless the relays are paused; rows another
/// relay holds are skipped, not waited for, so two relays never publish the same row at the same
/// time. Empty when nothing is pending or the relays are paused.
///
/// One statement: the claim, then the pause flag under a share lock. The flag is read only when
/// something was claimed, so a wake-up that finds nothing takes no row lock on it; [`pause`]
/// still waits for a batch that holds the share lock, and a batch that takes it after `pause`
/// committed sees the flag (a locking read in READ COMMITTED returns the newest committed
/// version of the row, even one committed after the statement began) and publishes nothing.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<Pending>, MessagingError> {
    let rows: Vec<(i64, Uuid, String, String, DateTime<Utc>, bool)> = sqlx::query_as(CLAIM)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    if rows.first().is_none_or(|row| row.5) {
        return Ok(Vec::new());
    }
    Ok(rows
        .into_iter()
        .map(|(id, message_id, routing_key, json, created_at, _)| {
            let properties = match Envelope::from_body(json.as_bytes()) {
                Ok(envelope) => envelope.properties(),
                Err(e) => {
                    tracing::warn!(%message_id, error = %e, "outbox row is not an envelope; publishing it as stored");
                    crate::envelope::minimal_properties(message_id, &routing_key)
                }
            };
            Pending {
                id,
                message_id,
                routing_key,
                body: json.into_bytes(),
                properties,
                created_at,
            }
        })
        .collect())
}

/// Marks claimed rows as published.
pub(crate) async fn mark_sent(conn: &mut PgConnection, ids: &[i64]) -> Result<(), MessagingError> {
    sqlx::query("UPDATE lab_outbox SET sent_at = clock_timestamp() WHERE id = ANY($1)")
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Deletes rows published more than `keep` ago (the relay calls this now and then); returns how
/// many went.
pub async fn purge_sent(pool: &PgPool, keep: Duration) -> Result<u64, MessagingError> {
    let deleted = sqlx::query(
        "DELETE FROM lab_outbox WHERE sent_at < clock_timestamp() - make_interval(secs => $1)",
    )
    .bind(keep.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(deleted)
}

/// What an operator sees of the outbox.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxStatus {
    /// Rows written but not yet confirmed by the broker.
    pub pending: i64,
    /// Age of the oldest of them; zero when none is pending.
    pub oldest_pending_age: Duration,
    /// Whether the relays are paused.
    pub paused: bool,
}

/// The outbox's backlog and pause flag.
pub async fn status(pool: &PgPool) -> Result<OutboxStatus, MessagingError> {
    let (pending, oldest_secs, paused): (i64, Option<f64>, bool) = sqlx::query_as(concat!(
        "SELECT count(o.id), \
                extract(epoch FROM clock_timestamp() - min(o.created_at))::float8, \
                (SELECT ",
        paused_now!(),
        " FROM lab_relay_control WHERE singleton) \
         FROM lab_outbox o WHERE o.sent_at IS NULL"
    ))
    .fetch_one(pool)
    .await?;
    Ok(OutboxStatus {
        pending,
        oldest_pending_age: Duration::from_secs_f64(oldest_secs.unwrap_or(0.0).max(0.0)),
        paused,
    })
}

/// Stops every relay of this schema from publishing, durably (it survives restarts). Returns
/// once batches already in flight have finished.
pub async fn pause(pool: &PgPool) -> Result<(), MessagingError> {
    set_paused(pool, true).await
}

/// Lets the relays publish again and wakes them to drain the backlog.
pub async fn resume(pool: &PgPool) -> Result<(), MessagingError> {
    set_paused(pool, false).await
}

async fn set_paused(pool: &PgPool, paused: bool) -> Result<(), MessagingError> {
    let mut tx = lab_db::begin(pool).await?;
    sqlx::query(
        "UPDATE lab_relay_control SET paused = $1, resume_at = NULL, changed_at = now() \
         WHERE singleton",
    )
    .bind(paused)
    .execute(&mut *tx)
    .await?;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Pauses the relays for `span` only: they publish again at its end on their next sweep, even
/// if whoever paused them is gone. Never shortens or replaces an operator's open-ended pause;
/// `false` when one is in force.
pub async fn pause_for(pool: &PgPool, span: Duration) -> Result<bool, MessagingError> {
    let mut tx = lab_db::begin(pool).await?;
    let done = sqlx::query(
        "UPDATE lab_relay_control \
         SET paused = true, resume_at = now() + make_interval(secs => $1), changed_at = now() \
         WHERE singleton AND NOT (paused AND resume_at IS NULL)",
    )
    .bind(span.as_secs_f64())
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    tx.commit().await?;
    Ok(done)
}

/// Ends a pause made by [`pause_for`] early and wakes the relays; an operator's open-ended
/// pause stays. `false` when there was no timed pause to end.
pub async fn resume_timed(pool: &PgPool) -> Result<bool, MessagingError> {
    let mut tx = lab_db::begin(pool).await?;
    let done = sqlx::query(
        "UPDATE lab_relay_control SET paused = false, resume_at = NULL, changed_at = now() \
         WHERE singleton AND paused AND resume_at IS NOT NULL",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    notify(&mut tx).await?;
    tx.commit().await?;
    Ok(done)
}
