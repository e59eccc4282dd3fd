//! Dead letters: messages a consumer gave up on, kept in the service's schema with the error that
//! killed them, listed for operators and replayed on request.
//!
//! The row is the record an operator works from; the copy in the `….dead` queue makes the failure
//! visible on the broker too. Replaying publishes the original body straight back to the
//! service's queue with a fresh attempt count and marks the row replayed; the inbox never saw the
//! message (its transaction rolled back), so the replay is applied normally.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::envelope::minimal_properties;
use crate::topology::{confirm_channel, publish_confirmed};
use crate::{Broker, Envelope, MessagingError, Topology};

/// Header set on a replayed message, so its handler and logs can tell.
pub const REPLAYED_HEADER: &str = "x-lab-replayed";

/// A message to record as dead.
pub(crate) struct NewDeadLetter {
    /// The consumer (service) that gave up.
    pub consumer: String,
    /// The message's id (a fresh one when an undecodable message had none).
    pub message_id: Uuid,
    /// Its type, or empty when unknown.
    pub message_type: String,
    /// Its routing key.
    pub routing_key: String,
    /// The raw body, kept byte for byte for the replay.
    pub body: Vec<u8>,
    /// Why it died.
    pub error: String,
    /// Failed attempts.
    pub attempts: u32,
}

/// One dead letter as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// Row id, what [`replay`] takes.
    pub id: i64,
    /// The consumer (service) that gave up.
    pub consumer: String,
    /// The message's id.
    pub message_id: Uuid,
    /// Its type, empty when it could not be decoded.
    pub message_type: String,
    /// Its routing key.
    pub routing_key: String,
    /// The body as text (lossy for non-UTF-8 bodies).
    pub body: String,
    /// The last error.
    pub error: String,
    /// Failed attempts before it died.
    pub attempts: i32,
    /// When it died (the last time, if it died again after a replay).
    pub dead_at: DateTime<Utc>,
    /// When it was last replayed, if ever.
    pub replayed_at: Option<DateTime<Utc>>,
    /// How often it was replayed.
    pub replay_count: i32,
}

/// Records (or, when the message dies again after a replay, refreshes) a dead letter.
pub(crate) async fn record(pool: &PgPool, dead: &NewDeadLetter) -> Result<(), MessagingError> {
    sqlx::query(
        "INSERT INTO lab_dead_letters \
             (consumer, message_id, message_type, routing_key, body, error, attempts) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (consumer, message_id) DO UPDATE SET \
             body = EXCLUDED.body, error = EXCLUDED.error, attempts = EXCLUDED.attempts, \
             dead_at = now(), replayed_at = NULL",
    )
    .bind(&dead.consumer)
    .bind(dead.message_id)
    .bind(&dead.message_type)
    .bind(&dead.routing_key)
    .bind(&dead.body)
    .bind(&dead.error)
    .bind(i32::try_from(dead.attempts).unwrap_or(i32::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

const SELECT: &str = "SELECT id, consumer, message_id, message_type, routing_key, \
     body, error, attempts, dead_at, replayed_at, replay_count \
     FROM lab_dead_letters";

/// A `lab_dead_letters` row as stored; [`DeadLetter`] is the same with the body as text.
#[derive(sqlx::FromRow)]
struct Row {
    /// Row id.
    id: i64,
    /// The consumer that gave up.
    consumer: String,
    /// The message's id.
    message_id: Uuid,
    /// Its type.
    message_type: String,
    /// Its routing key.
    routing_key: String,
    /// The raw body, byte for byte.
    body: Vec<u8>,
    /// The last error.
    error: String,
    /// Failed attempts.
    attempts: i32,
    /// When it died.
    dead_at: DateTime<Utc>,
    /// When it was last replayed.
    replayed_at: Option<DateTime<Utc>>,
    /// How often it was replayed.
    replay_count: i32,
}

impl From<Row> for DeadLetter {
    fn from(r: Row) -> Self {
        Self {
            id: r.id,
            consumer: r.consumer,
            message_id: r.message_id,
            message_type: r.message_type,
            routing_key: r.routing_key,
            body: String::from_utf8_lossy(&r.body).into_owned(),
            error: r.error,
            attempts: r.attempts,
            dead_at: r.dead_at,
            replayed_at: r.replayed_at,
            replay_count: r.replay_count,
        }
    }
}

/// The newest `limit` dead letters, newest first.
pub async fn list(pool: &PgPool, limit: i64) -> Result<Vec<DeadLetter>, MessagingError> {
    let rows = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!(
        "{SELECT} ORDER BY dead_at DESC, id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(DeadLetter::from).collect())
}

/// Publishes dead letter `id` back to `topology`'s queue (attempts start over), waits for the
/// broker's confirm, and marks it replayed.
pub async fn replay(
    pool: &PgPool,
    broker: &Broker,
    topology: &Topology,
    id: i64,
) -> Result<DeadLetter, MessagingError> {
    let row: Option<(Uuid, String, Vec<u8>)> = sqlx::query_as(
        "SELECT message_id, message_type, body FROM lab_dead_letters \
         WHERE id = $1 AND consumer = $2",
    )
    .bind(id)
    .bind(topology.service())
    .fetch_optional(pool)
    .await?;
    let (message_id, message_type, body) = row.ok_or(MessagingError::NoSuchDeadLetter(id))?;
    let mut properties = match Envelope::from_body(&body) {
        Ok(envelope) => envelope.properties(),
        Err(_) => minimal_properties(message_id, &message_type),
    };
    let mut headers = properties
        .headers()
        .clone()
        .unwrap_or_else(FieldTable::default);
    headers.insert(REPLAYED_HEADER.into(), AMQPValue::Boolean(true));
    properties = properties.with_headers(headers);
    let channel = confirm_channel(broker).await?;
    let published = publish_confirmed(
        &channel,
        "",
        &topology.queue(),
        &body,
        properties,
        message_id,
    )
    .await;
    let _ = channel.close(200, "replayed".into()).await;
    published?;
    sqlx::query(
        "UPDATE lab_dead_letters SET replayed_at = now(), replay_count = replay_count + 1 \
         WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    let replayed = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(format!("{SELECT} WHERE id = $1")))
        .bind(id)
        .fetch_one(pool)
        .await?;
    Ok(replayed.into())
}
