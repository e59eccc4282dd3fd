//! The payments tables: one row per order (`payments`), its history (`payment_events`, which is
//! also the webhook inbox), and the saga events already emitted (`payment_emissions`). Every
//! function takes the caller's connection, so a state change, its history row and its outbox
//! event commit together.
//!
//! Round trips are what a payment costs PostgreSQL most (its CPU goes to wake-ups, not to the
//! statements), so a command or webhook makes few: one to lock (or open) the payment, one for
//! everything it writes ([`finish`]) and one for its outbox rows, when it emits any.

use chrono::{DateTime, Utc};
use lab_contracts::Message;
use lab_messaging::{Envelope, outbox};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::state::PaymentState;

/// What went wrong storing a payment.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Outbox(#[from] lab_messaging::MessagingError),
    #[error("encoding an event: {0}")]
    Json(#[from] serde_json::Error),
    #[error("payment {0} has an unknown state `{1}`")]
    BadState(Uuid, String),
}

/// A payment as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Payment {
    /// The order it pays for.
    pub order_id: Uuid,
    /// `stripe` or `paypal`; none for the tombstone of a void that came first.
    pub provider: Option<String>,
    /// Where it stands (see [`PaymentState`]).
    #[sqlx(try_from = "String")]
    #[schema(value_type = PaymentState)]
    pub state: StateColumn,
    /// The session's amount in minor units.
    pub amount_minor: Option<i64>,
    /// The session's currency.
    pub currency: Option<String>,
    /// Stripe checkout session / PayPal order.
    pub session_id: Option<String>,
    /// The provider's hosted payment page.
    pub payment_url: Option<String>,
    /// Stripe payment intent.
    pub intent_id: Option<String>,
    /// PayPal authorization.
    pub authorization_id: Option<String>,
    /// PayPal capture.
    pub capture_id: Option<String>,
    /// The refund at either provider.
    pub refund_id: Option<String>,
    /// What the provider actually authorized, in minor units.
    pub authorized_minor: Option<i64>,
    /// ... in this currency.
    pub authorized_currency: Option<String>,
    /// What was captured.
    pub captured_minor: Option<i64>,
    /// What was refunded.
    pub refunded_minor: Option<i64>,
    /// Whether the authorization differed from the session in amount or currency.
    pub amount_mismatch: bool,
    /// Why it failed, was declined or voided, when it did.
    pub reason: Option<String>,
    /// When the row was written.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// [`PaymentState`] read from its text column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct StateColumn(pub PaymentState);

impl TryFrom<String> for StateColumn {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        PaymentState::parse(&value)
            .map(Self)
            .ok_or_else(|| format!("unknown payment state `{value}`"))
    }
}

impl Payment {
    /// Its state.
    pub fn state(&self) -> PaymentState {
        self.state.0
    }
}

/// The row a payment starts as, written by [`lock_or_insert`] when the order has none.
#[derive(Debug, Clone, Copy)]
pub struct Fresh<'a> {
    /// `stripe` or `paypal`; none for a tombstone.
    pub provider: Option<&'a str>,
    /// `session_created` for a session being opened; `voided` or `failed` for a payment that
    /// ended before any session.
    pub state: PaymentState,
    /// The session's amount in minor units.
    pub amount_minor: Option<i64>,
    /// Its currency, upper-case.
    pub currency: Option<&'a str>,
    /// Why it ended, for `voided` and `failed`.
    pub reason: Option<&'a str>,
}

/// A payment locked by [`lock_or_insert`], and whether this call wrote it.
#[derive(Debug, sqlx::FromRow)]
pub struct Locked {
    #[sqlx(flatten)]
    pub payment: Payment,
    /// True when the order had no payment and `fresh` was written.
    pub inserted: bool,
}

/// The payment of `order_id`, locked until the caller's transaction ends, or `fresh` written
/// as its row (locked the same way) when it has none. Commands and webhooks for one order take
/// turns on this row.
///
/// One statement, `INSERT … ON CONFLICT DO UPDATE` with an update that changes nothing (as in
/// orders' claims): it returns the current row, locked, and unlike `SELECT … FOR UPDATE` it also
/// waits for a row another transaction is inserting. So a webhook that beats the commit of its
/// session's `CreatePaymentSession` (a buyer who approves at once) waits for that commit and then
/// finds the row, instead of missing it and asking the provider to retry half a second later
/// (measured by `lab bench checkout`: 11–28 % of orders under load); and a void racing the
/// session's opening finds the session rather than an empty slot for its tombstone. `xmax = 0`
/// holds only for a row this statement inserted (the conflict path locks the row, setting it).
pub async fn lock_or_insert(
    conn: &mut PgConnection,
    order_id: Uuid,
    fresh: &Fresh<'_>,
) -> Result<Locked, StoreError> {
    Ok(sqlx::query_as::<_, Locked>(
        "INSERT INTO payments AS p (order_id, provider, state, amount_minor, currency, reason) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (order_id) DO UPDATE SET order_id = p.order_id \
         RETURNING p.*, (p.xmax = 0) AS inserted",
    )
    .bind(order_id)
    .bind(fresh.provider)
    .bind(fresh.state.as_str())
    .bind(fresh.amount_minor)
    .bind(fresh.currency)
    .bind(fresh.reason)
    .fetch_one(conn)
    .await?)
}

/// The payment of `order_id`, locked until the caller's transaction ends, if it has one. For a
/// step that only follows a committed payment (a capture follows the authorization, which
/// follows the session's commit), so there is no insert to wait for.
pub async fn lock(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Payment>, StoreError> {
    Ok(
        sqlx::query_as::<_, Payment>("SELECT * FROM payments WHERE order_id = $1 FOR UPDATE")
            .bind(order_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// The payment of `order_id`, unlocked.
pub async fn get(pool: &PgPool, order_id: Uuid) -> Result<Option<Payment>, StoreError> {
    Ok(
        sqlx::query_as::<_, Payment>("SELECT * FROM payments WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(pool)
            .await?,
    )
}

/// The order whose payment has Stripe intent `intent_id` (a refund event names the intent, not
/// always the order).
pub async fn order_of_intent(
    conn: &mut PgConnection,
    intent_id: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT order_id FROM payments WHERE intent_id = $1")
            .bind(intent_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// Records a webhook event before it is applied; false when `(source, event_id)` is already
/// recorded (a duplicate: the caller changes nothing). A concurrent duplicate waits here for the
/// first one's transaction and then finds it.
pub async fn claim_event(
    conn: &mut PgConnection,
    source: &str,
    event_id: &str,
    kind: &str,
    order_id: Option<Uuid>,
    detail: &serde_json::Value,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO payment_events (order_id, source, event_id, kind, outcome, detail) \
         VALUES ($1, $2, $3, $4, 'received', $5) ON CONFLICT (source, event_id) DO NOTHING \
         RETURNING id",
    )
    .bind(order_id)
    .bind(source)
    .bind(event_id)
    .bind(kind)
    .bind(sqlx::types::Json(detail))
    .fetch_optional(conn)
    .await?)
}

/// Sets what a claimed event did.
pub async fn set_outcome(
    conn: &mut PgConnection,
    id: i64,
    outcome: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE payment_events SET outcome = $2 WHERE id = $1")
        .bind(id)
        .bind(outcome)
        .execute(conn)
        .await?;
    Ok(())
}

/// The line of history a command leaves in `payment_events`.
#[derive(Debug)]
pub struct CommandLine<'a> {
    /// The command's name (`CreatePaymentSession`, …).
    pub kind: &'a str,
    /// What it did: `applied`, `ignored`, `failed`, …
    pub outcome: &'a str,
    /// What was noted with it (ids, reasons, the state it found).
    pub detail: serde_json::Value,
}

/// What a command or webhook writes once it has decided, in one statement (see [`finish`]).
#[derive(Debug, Default)]
pub struct Writes<'a> {
    /// The payment, written back (every mutable column) when it changed.
    pub save: Option<&'a Payment>,
    /// Saga events to emit, in order; one this order already emitted is dropped.
    pub events: Vec<Envelope>,
    /// A command's line of history.
    pub command: Option<CommandLine<'a>>,
    /// A webhook's claimed `payment_events` row and its outcome.
    pub webhook: Option<(i64, &'a str)>,
}

/// The saga event `event` of `order_id` as an envelope; `cause` is the command that led to it,
/// if any.
pub fn event<T: Message>(
    order_id: Uuid,
    event: &T,
    cause: Option<&Envelope>,
) -> Result<Envelope, StoreError> {
    let payload = serde_json::to_value(event)?;
    Ok(match cause {
        Some(cause) => Envelope::caused_by(T::NAME, payload, cause),
        // Caused by a provider's webhook, not a message: the order's flow is still the order
        // (its correlation id), so consumers apply it in order with the saga's other messages.
        None => Envelope {
            correlation_id: order_id,
            ..Envelope::new(T::NAME, payload)
        },
    })
}

/// Writes what a command or webhook on `order_id`'s payment decided: the payment's columns, the
/// emissions (each event type at most once per order, whichever path reaches it first), and
/// its line of history, in one statement; then the emitted events' outbox rows, in one more
/// when there are any. Returns how many events were emitted now.
pub async fn finish(
    conn: &mut PgConnection,
    order_id: Uuid,
    w: Writes<'_>,
) -> Result<usize, StoreError> {
    let p = w.save;
    let kinds: Vec<&str> = w.events.iter().map(|e| e.kind.as_str()).collect();
    let ids: Vec<Uuid> = w.events.iter().map(|e| e.message_id).collect();
    let command = w.command.as_ref();
    // Each part is a data-modifying CTE, which PostgreSQL runs whether or not it is referenced;
    // a part with nothing to do matches no row (`WHERE $n`, an empty array, a NULL id).
    let emitted: Vec<Uuid> = sqlx::query_scalar(
        "WITH saved AS ( \
             UPDATE payments SET state = $2, session_id = $3, payment_url = $4, intent_id = $5, \
                 authorization_id = $6, capture_id = $7, refund_id = $8, authorized_minor = $9, \
                 authorized_currency = $10, captured_minor = $11, refunded_minor = $12, \
                 amount_mismatch = $13, reason = $14, updated_at = now() \
             WHERE order_id = $1 AND $15), \
         commanded AS ( \
             INSERT INTO payment_events (order_id, source, kind, outcome, detail) \
             SELECT $1, 'command', $16, $17, $18 WHERE $16::text IS NOT NULL), \
         received AS (UPDATE payment_events SET outcome = $20 WHERE id = $19), \
         emitted AS ( \
             INSERT INTO payment_emissions (order_id, event, message_id) \
             SELECT $1, e.event, e.message_id FROM unnest($21::text[], $22::uuid[]) AS e (event, message_id) \
             ON CONFLICT DO NOTHING RETURNING message_id) \
         SELECT message_id FROM emitted",
    )
    .bind(order_id)
    .bind(p.map(|p| p.state().as_str()))
    .bind(p.and_then(|p| p.session_id.as_deref()))
    .bind(p.and_then(|p| p.payment_url.as_deref()))
    .bind(p.and_then(|p| p.intent_id.as_deref()))
    .bind(p.and_then(|p| p.authorization_id.as_deref()))
    .bind(p.and_then(|p| p.capture_id.as_deref()))
    .bind(p.and_then(|p| p.refund_id.as_deref()))
    .bind(p.and_then(|p| p.authorized_minor))
    .bind(p.and_then(|p| p.authorized_currency.as_deref()))
    .bind(p.and_then(|p| p.captured_minor))
    .bind(p.and_then(|p| p.refunded_minor))
    .bind(p.map(|p| p.amount_mismatch))
    .bind(p.and_then(|p| p.reason.as_deref()))
    .bind(p.is_some())
    .bind(command.map(|c| c.kind))
    .bind(command.map(|c| c.outcome))
    .bind(command.map(|c| sqlx::types::Json(&c.detail)))
    .bind(w.webhook.map(|(id, _)| id))
    .bind(w.webhook.map(|(_, outcome)| outcome))
    .bind(&kinds)
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let fresh: Vec<Envelope> = w
        .events
        .into_iter()
        .filter(|e| emitted.contains(&e.message_id))
        .collect();
    outbox::enqueue_all(conn, &fresh).await?;
    Ok(fresh.len())
}

/// Puts `event` in the outbox unless this order already emitted one of its type; true when it
/// was enqueued now. `cause` is the command that led to it, if any.
pub async fn emit_once<T: Message>(
    conn: &mut PgConnection,
    order_id: Uuid,
    event: &T,
    cause: Option<&Envelope>,
) -> Result<bool, StoreError> {
    let events = vec![self::event(order_id, event, cause)?];
    let writes = Writes {
        events,
        ..Writes::default()
    };
    Ok(finish(conn, order_id, writes).await? == 1)
}

/// One line of a payment's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct EventRecord {
    /// `stripe`, `paypal` or `command`.
    pub source: String,
    /// The provider's event id, for webhooks.
    pub event_id: Option<String>,
    /// The event type or command name.
    pub kind: String,
    /// What it did: `applied`, `ignored`, …
    pub outcome: String,
    /// What was noted with it (amounts, reasons).
    #[schema(value_type = Object)]
    pub detail: sqlx::types::Json<serde_json::Value>,
    /// When it arrived.
    pub received_at: DateTime<Utc>,
}

/// The history of `order_id`, oldest first.
pub async fn history(pool: &PgPool, order_id: Uuid) -> Result<Vec<EventRecord>, StoreError> {
    Ok(sqlx::query_as::<_, EventRecord>(
        "SELECT source, event_id, kind, outcome, detail, received_at FROM payment_events \
         WHERE order_id = $1 ORDER BY id",
    )
    .bind(order_id)
    .fetch_all(pool)
    .await?)
}
