//! Drives the pure saga ([`crate::saga::decide`]) against the database: one event at a time,
//! inside the caller's transaction (the consumer's, or the deadline poller's), so the new state,
//! its history row, its deadline and every outgoing command commit together or not at all.
//!
//! Each step: lock the saga row, decide, then ONE statement (a data-modifying `WITH`) that
//! compare-and-sets the new state on `version`, appends a transition, replaces the deadline and
//! writes each command as its lab-contracts message plus a `SagaTransitioned` for orders
//! ([`crate::commands`]) to the outbox, all caused by the message that triggered the step. An
//! ignored event is one statement too: its transition (with the reason) and, for a stale
//! timeout, its deadline's removal. Round trips, not the work in each, are what a step costs
//! PostgreSQL.

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use lab_contracts::{Money, OrderLine, OrderPlaced};
use lab_messaging::outbox::{self, NOTIFY_SQL};
use lab_messaging::{Envelope, MessagingError};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

use crate::commands::{Order, Step, messages};
use crate::saga::{self, Command, Decision, Event, Saga, State, Timeouts};

/// Why a step could not be applied; the caller's transaction rolls back and the step is retried.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Outbox(#[from] MessagingError),
    #[error("encoding a message: {0}")]
    Json(#[from] serde_json::Error),
    #[error("saga {0} has an unknown state {1:?} in the database")]
    BadState(Uuid, String),
    #[error("saga {0} changed under this step (version {1} is gone)")]
    Conflict(Uuid, i64),
    #[error("a deadline of {0:?} does not fit in a timestamp")]
    Deadline(std::time::Duration),
}

/// What happened to one message or deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The saga moved (or issued commands).
    Applied { from: State, to: State },
    /// Recorded in the history, changed nothing.
    Ignored(&'static str),
    /// No saga for this order: nothing to record it against.
    UnknownSaga,
}

/// A saga row with what the commands need besides the pure state.
struct Row {
    saga: Saga,
    version: i64,
    provider: String,
    lines: Vec<OrderLine>,
    /// The order's own payment window, when it asked for one (the demo).
    payment_window: Option<std::time::Duration>,
}

impl Row {
    /// The configured timeouts, with the order's own payment window if it has one.
    fn timeouts(&self, configured: &Timeouts) -> Timeouts {
        configured.with_payment_window(self.payment_window)
    }

    fn order(&self, order_id: Uuid) -> Order<'_> {
        Order {
            order_id,
            lines: &self.lines,
            provider: &self.provider,
            total: &self.saga.total,
        }
    }
}

/// Starts the saga of `placed` and asks catalog for its stock. A second `OrderPlaced` for the
/// same order (another message id, so the inbox let it through) starts nothing and is recorded
/// as ignored.
pub async fn start(
    tx: &mut PgConnection,
    placed: &OrderPlaced,
    cause: &Envelope,
    timeouts: &Timeouts,
) -> Result<Outcome, StepError> {
    let (saga, commands) = saga::start(placed.total.clone());
    let order = Order {
        order_id: placed.order_id,
        lines: &placed.lines,
        provider: &placed.provider,
        total: &placed.total,
    };
    let timeouts = &timeouts.with_payment_window(
        placed
            .payment_window_s
            .map(|s| std::time::Duration::from_secs(u64::from(s))),
    );
    let step = Step {
        from: "",
        to: saga.state,
        event: "OrderPlaced",
    };
    let out = messages(&order, step, &commands, cause, timeouts.payment)?;
    let detail = serde_json::json!({ "total": placed.total, "provider": placed.provider });
    let names: Vec<&str> = commands.iter().map(Command::name).collect();
    let due = due_at(timeouts, saga.state)?;
    // The saga, its first transition, its deadline and its commands, or nothing when the order's
    // saga exists already.
    static START: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH created AS ( \
                 INSERT INTO sagas (order_id, state, total_minor, currency, provider, customer, \
                                    lines, correlation_id, payment_window_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (order_id) DO NOTHING \
                 RETURNING order_id), \
             history AS ( \
                 INSERT INTO saga_transitions \
                     (order_id, seq, from_state, to_state, event, detail, message_id, commands) \
                 SELECT order_id, 1, NULL, $2, 'OrderPlaced', $10, $11, $12 FROM created), \
             armed AS ( \
                 INSERT INTO saga_deadlines (order_id, state, due_at) \
                 SELECT order_id, $2, $13 FROM created WHERE $13::timestamptz IS NOT NULL), \
             written AS ({} WHERE EXISTS (SELECT 1 FROM created)) \
             SELECT {NOTIFY_SQL} FROM created",
            outbox::insert_rows_sql(14)
        )
    });
    let rows = outbox::Rows::new(&out);
    let query = sqlx::query(START.as_str())
        .bind(placed.order_id)
        .bind(saga.state.as_str())
        .bind(placed.total.amount_minor)
        .bind(&placed.total.currency)
        .bind(&placed.provider)
        .bind(&placed.customer)
        .bind(Json(&placed.lines))
        .bind(cause.correlation_id)
        .bind(placed.payment_window_s.map(|s| i64::from(s) * 1_000))
        .bind(&detail)
        .bind(cause.message_id)
        .bind(&names)
        .bind(due);
    let inserted = rows.bind(query).execute(&mut *tx).await?.rows_affected();
    if inserted > 0 {
        return Ok(Outcome::Applied {
            from: saga.state,
            to: saga.state,
        });
    }
    let Some(row) = load_for_update(tx, placed.order_id).await? else {
        return Ok(Outcome::UnknownSaga);
    };
    let why = "the saga of this order has already started";
    let state = row.saga.state;
    record(
        tx,
        placed.order_id,
        cause,
        Entry {
            from: Some(state),
            to: state,
            event: "OrderPlaced",
            detail: &detail,
            ignored: why,
        },
        None,
    )
    .await?;
    Ok(Outcome::Ignored(why))
}

/// Applies one event to the saga of `order_id`.
pub async fn apply(
    tx: &mut PgConnection,
    order_id: Uuid,
    event: &Event,
    cause: &Envelope,
    timeouts: &Timeouts,
) -> Result<Outcome, StepError> {
    let Some(row) = load_for_update(tx, order_id).await? else {
        return Ok(Outcome::UnknownSaga);
    };
    let timeouts = &row.timeouts(timeouts);
    let from = row.saga.state;
    let decision = saga::decide(&row.saga, event);
    let detail = serde_json::to_value(event)?;
    if let Some(why) = decision.ignored {
        // A deadline that fired for a state the saga has left must not fire again.
        let stale = match event {
            Event::Timeout { state } => Some(*state),
            _ => None,
        };
        let entry = Entry {
            from: Some(from),
            to: from,
            event: event.name(),
            detail: &detail,
            ignored: why,
        };
        record(tx, order_id, cause, entry, stale).await?;
        return Ok(Outcome::Ignored(why));
    }
    let Decision {
        saga: next,
        commands,
        rearm,
        ..
    } = decision;
    let step = Step {
        from: from.as_str(),
        to: next.state,
        event: event.name(),
    };
    let out = messages(
        &row.order(order_id),
        step,
        &commands,
        cause,
        timeouts.payment,
    )?;
    // The deadline is replaced when the state changes (or the step asks): by the new state's,
    // or by none when it has none.
    let replace = next.state != from || rearm;
    let due = if replace {
        due_at(timeouts, next.state)?
    } else {
        None
    };
    let clear = replace && due.is_none();
    let names: Vec<&str> = commands.iter().map(Command::name).collect();
    // Compare-and-set on `version`: the row lock makes a conflict impossible for writers that
    // lock first, the check keeps it impossible for any that do not; nothing else is written
    // when it finds no row. The saga row is locked, so `max(seq) + 1` is safe.
    static STEP: LazyLock<String> = LazyLock::new(|| {
        format!(
            "WITH saved AS ( \
                 UPDATE sagas SET state = $3, refund_issued = $4, commit_retries = $5, \
                                  version = version + 1, updated_at = now() \
                 WHERE order_id = $1 AND version = $2 RETURNING order_id), \
             history AS ( \
                 INSERT INTO saga_transitions \
                     (order_id, seq, from_state, to_state, event, detail, message_id, commands) \
                 SELECT s.order_id, \
                        (SELECT coalesce(max(t.seq), 0) + 1 FROM saga_transitions t \
                         WHERE t.order_id = s.order_id), \
                        $6, $3, $7, $8, $9, $10 \
                 FROM saved s), \
             armed AS ( \
                 INSERT INTO saga_deadlines (order_id, state, due_at) \
                 SELECT order_id, $3, $11 FROM saved WHERE $11::timestamptz IS NOT NULL \
                 ON CONFLICT (order_id) DO UPDATE SET state = excluded.state, due_at = excluded.due_at), \
             cleared AS ( \
                 DELETE FROM saga_deadlines d USING saved s WHERE d.order_id = s.order_id AND $12), \
             written AS ({} WHERE EXISTS (SELECT 1 FROM saved)) \
             SELECT {NOTIFY_SQL} FROM saved",
            outbox::insert_rows_sql(13)
        )
    });
    let rows = outbox::Rows::new(&out);
    let query = sqlx::query(STEP.as_str())
        .bind(order_id)
        .bind(row.version)
        .bind(next.state.as_str())
        .bind(next.refund_issued)
        .bind(i16::from(next.commit_retries))
        .bind(from.as_str())
        .bind(event.name())
        .bind(&detail)
        .bind(cause.message_id)
        .bind(&names)
        .bind(due)
        .bind(clear);
    let saved = rows.bind(query).execute(&mut *tx).await?.rows_affected();
    if saved == 0 {
        return Err(StepError::Conflict(order_id, row.version));
    }
    Ok(Outcome::Applied {
        from,
        to: next.state,
    })
}

async fn load_for_update(tx: &mut PgConnection, order_id: Uuid) -> Result<Option<Row>, StepError> {
    type Raw = (
        String,
        i64,
        i64,
        String,
        bool,
        i16,
        String,
        Json<Vec<OrderLine>>,
        Option<i64>,
    );
    let raw: Option<Raw> = sqlx::query_as(
        "SELECT state, version, total_minor, currency, refund_issued, commit_retries, provider, \
                lines, payment_window_ms \
         FROM sagas WHERE order_id = $1 FOR UPDATE",
    )
    .bind(order_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((
        state,
        version,
        amount_minor,
        currency,
        refund_issued,
        retries,
        provider,
        lines,
        window_ms,
    )) = raw
    else {
        return Ok(None);
    };
    let state = State::parse(&state).ok_or_else(|| StepError::BadState(order_id, state.clone()))?;
    Ok(Some(Row {
        saga: Saga {
            state,
            total: Money {
                amount_minor,
                currency,
            },
            refund_issued,
            commit_retries: u8::try_from(retries).unwrap_or(u8::MAX),
        },
        version,
        provider,
        lines: lines.0,
        payment_window: window_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(std::time::Duration::from_millis),
    }))
}

/// The `saga_transitions` row of an ignored event, besides the order and the causing message.
struct Entry<'a> {
    /// None for the step that started the saga.
    from: Option<State>,
    to: State,
    /// The saga event's name, or `OrderPlaced`.
    event: &'a str,
    /// The event with its data.
    detail: &'a serde_json::Value,
    /// Why the event changed nothing.
    ignored: &'a str,
}

/// Appends an ignored event to the saga's history and, when it was a deadline for a state the
/// saga has left (`stale`), removes that deadline; one statement. The saga row is locked, so
/// `max(seq) + 1` is safe.
async fn record(
    tx: &mut PgConnection,
    order_id: Uuid,
    cause: &Envelope,
    entry: Entry<'_>,
    stale: Option<State>,
) -> Result<(), StepError> {
    let Entry {
        from,
        to,
        event,
        detail,
        ignored,
    } = entry;
    sqlx::query(
        "WITH history AS ( \
             INSERT INTO saga_transitions \
                 (order_id, seq, from_state, to_state, event, detail, message_id, ignored) \
             SELECT $1, coalesce(max(seq), 0) + 1, $2, $3, $4, $5, $6, $7 \
             FROM saga_transitions WHERE order_id = $1) \
         DELETE FROM saga_deadlines WHERE order_id = $1 AND state = $8",
    )
    .bind(order_id)
    .bind(from.map(State::as_str))
    .bind(to.as_str())
    .bind(event)
    .bind(detail)
    .bind(cause.message_id)
    .bind(ignored)
    .bind(stale.map(State::as_str))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// When the deadline of `state` falls, counted from now (none for a state without one).
fn due_at(timeouts: &Timeouts, state: State) -> Result<Option<DateTime<Utc>>, StepError> {
    timeouts
        .for_state(state)
        .map(|after| Ok(Utc::now() + chrono_duration(after)?))
        .transpose()
}

fn chrono_duration(d: std::time::Duration) -> Result<chrono::Duration, StepError> {
    chrono::Duration::from_std(d).map_err(|_| StepError::Deadline(d))
}

/// The kind of the envelope a deadline's step is caused by. Never published: it stands for the
/// clock, so the commands a deadline issues still name a cause (recorded as the transition's
/// message id) and join the order's flow (its correlation id).
pub const DEADLINE_KIND: &str = "checkout.deadline-passed";

/// The stand-in cause of a deadline that fired for `order_id` while in `state`.
pub async fn deadline_cause(
    tx: &mut PgConnection,
    order_id: Uuid,
    state: State,
) -> Result<Envelope, StepError> {
    let correlation: Option<Uuid> =
        sqlx::query_scalar("SELECT correlation_id FROM sagas WHERE order_id = $1")
            .bind(order_id)
            .fetch_optional(&mut *tx)
            .await?;
    let mut cause = Envelope::new(
        DEADLINE_KIND,
        serde_json::json!({ "order_id": order_id, "state": state.as_str() }),
    );
    if let Some(correlation) = correlation {
        cause.correlation_id = correlation;
    }
    Ok(cause)
}
