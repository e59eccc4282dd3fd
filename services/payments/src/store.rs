//! The payments tables: one row per order (`payments`), its history (`payment_events`, which is
//! also the webhook inbox), and the saga events already emitted (`payment_emissions`). Every
//! function takes the caller's connection, so a state change, its history row and its outbox
//! event commit together.

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

/// A session about to be opened.
pub struct NewSession<'a> {
    /// The order it pays for.
    pub order_id: Uuid,
    /// `stripe` or `paypal`.
    pub provider: &'a str,
    /// The amount asked, in minor units.
    pub amount_minor: i64,
    /// Its currency, upper-case.
    pub currency: &'a str,
}

/// The payment of `order_id`, locked until the caller's transaction ends (commands and webhooks
/// for one order take turns).
///
/// The turn is an advisory lock on the order id, taken before the row is read, so it also covers
/// a payment that does not exist yet: `CreatePaymentSession` holds it while it inserts the row and
/// calls the provider, and a webhook for that session (a buyer who approves at once) waits for
/// the commit and then finds the row, instead of missing it and asking the provider to retry
/// half a second later (measured by `lab bench checkout`: 11–28 % of orders under load).
pub async fn lock(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<Payment>, StoreError> {
    // Two-key form: the first key is this table's namespace, so no other user of advisory locks
    // in the database can collide with an order's.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('payments.order'), hashtext($1::text))")
        .bind(order_id)
        .execute(&mut *conn)
        .await?;
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

/// Claims the order's payment row before the provider is called, so a concurrent void waits
/// for this transaction (and then finds the session) instead of leaving a tombstone behind a
/// session that is being opened; the session's ids follow with [`set_session`].
pub async fn insert_opening(
    conn: &mut PgConnection,
    s: &NewSession<'_>,
) -> Result<Payment, StoreError> {
    Ok(sqlx::query_as::<_, Payment>(
        "INSERT INTO payments (order_id, provider, state, amount_minor, currency) \
         VALUES ($1, $2, 'session_created', $3, $4) RETURNING *",
    )
    .bind(s.order_id)
    .bind(s.provider)
    .bind(s.amount_minor)
    .bind(s.currency)
    .fetch_one(conn)
    .await?)
}

/// Records the ids of the session the provider opened.
pub async fn set_session(
    conn: &mut PgConnection,
    order_id: Uuid,
    session_id: &str,
    payment_url: &str,
    intent_id: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments SET session_id = $2, payment_url = $3, intent_id = $4, \
             updated_at = now() WHERE order_id = $1",
    )
    .bind(order_id)
    .bind(session_id)
    .bind(payment_url)
    .bind(intent_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores a payment that ended before any session: `state` is `voided` (a tombstone) or
/// `failed` (the provider refused the session).
pub async fn insert_ended(
    conn: &mut PgConnection,
    order_id: Uuid,
    provider: Option<&str>,
    state: PaymentState,
    reason: &str,
) -> Result<Payment, StoreError> {
    Ok(sqlx::query_as::<_, Payment>(
        "INSERT INTO payments (order_id, provider, state, reason) VALUES ($1, $2, $3, $4) \
         RETURNING *",
    )
    .bind(order_id)
    .bind(provider)
    .bind(state.as_str())
    .bind(reason)
    .fetch_one(conn)
    .await?)
}

/// Writes back every mutable column of `p`.
pub async fn save(conn: &mut PgConnection, p: &Payment) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE payments SET state = $2, intent_id = $3, authorization_id = $4, capture_id = $5, \
             refund_id = $6, authorized_minor = $7, authorized_currency = $8, captured_minor = $9, \
             refunded_minor = $10, amount_mismatch = $11, reason = $12, updated_at = now() \
         WHERE order_id = $1",
    )
    .bind(p.order_id)
    .bind(p.state().as_str())
    .bind(&p.intent_id)
    .bind(&p.authorization_id)
    .bind(&p.capture_id)
    .bind(&p.refund_id)
    .bind(p.authorized_minor)
    .bind(&p.authorized_currency)
    .bind(p.captured_minor)
    .bind(p.refunded_minor)
    .bind(p.amount_mismatch)
    .bind(&p.reason)
    .execute(conn)
    .await?;
    Ok(())
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

/// Records a command and what it did.
pub async fn record_command(
    conn: &mut PgConnection,
    order_id: Uuid,
    kind: &str,
    outcome: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO payment_events (order_id, source, kind, outcome, detail) \
         VALUES ($1, 'command', $2, $3, $4)",
    )
    .bind(order_id)
    .bind(kind)
    .bind(outcome)
    .bind(sqlx::types::Json(detail))
    .execute(conn)
    .await?;
    Ok(())
}

/// Puts `event` in the outbox unless this order already emitted one of its type; true when it
/// was enqueued now. `cause` is the command that led to it, if any.
pub async fn emit_once<T: Message>(
    conn: &mut PgConnection,
    order_id: Uuid,
    event: &T,
    cause: Option<&Envelope>,
) -> Result<bool, StoreError> {
    let payload = serde_json::to_value(event)?;
    let envelope = match cause {
        Some(cause) => Envelope::caused_by(T::NAME, payload, cause),
        // Caused by a provider's webhook, not a message: the order's flow is still the order
        // (its correlation id), so consumers apply it in order with the saga's other messages.
        None => Envelope {
            correlation_id: order_id,
            ..Envelope::new(T::NAME, payload)
        },
    };
    let inserted = sqlx::query(
        "INSERT INTO payment_emissions (order_id, event, message_id) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(order_id)
    .bind(T::NAME)
    .bind(envelope.message_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(false);
    }
    outbox::enqueue(conn, &envelope).await?;
    Ok(true)
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
