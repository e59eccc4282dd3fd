//! Opening a transaction that a cancelled caller cannot leave open on a pooled connection.
//!
//! sqlx 0.9.0's `Pool::begin` is not cancel-safe on PostgreSQL: it sends `BEGIN` and raises the
//! connection's transaction depth only once the answer is read, and its drop guards queue a
//! `ROLLBACK` only when that depth is above zero. A caller dropped during that round trip (a
//! client hanging up on `POST /orders`, a caller's timeout, a `select!` branch losing) gives the
//! connection back to the pool inside a transaction nobody tracks: it sits `idle in
//! transaction`, the next borrower's statements run in it and its next `BEGIN` draws PostgreSQL's
//! warning "there is already a transaction in progress". [`begin`] runs the `BEGIN` on a task of
//! its own, which always finishes it: a caller that is gone drops the finished transaction, which
//! rolls it back before the connection is pooled again.

use sqlx::{PgPool, Postgres, Transaction};
use tracing::Instrument as _;

/// `pool.begin()`, safe to cancel: see the module's doc. Costs one task spawn per transaction.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    opened(pool.clone(), None).await
}

/// `pool.begin_with(statement)` (a `BEGIN` with settings of its own, sent in one round trip),
/// safe to cancel as [`begin`] is.
pub async fn begin_with(
    pool: &PgPool,
    statement: &'static str,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    opened(pool.clone(), Some(statement)).await
}

#[expect(
    clippy::disallowed_methods,
    reason = "the one caller of sqlx's `Pool::begin`, made cancel-safe by its own task"
)]
async fn opened(
    pool: PgPool,
    statement: Option<&'static str>,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let opening = tokio::spawn(
        async move {
            match statement {
                Some(statement) => pool.begin_with(statement).await,
                None => pool.begin().await,
            }
        }
        .in_current_span(),
    );
    match opening.await {
        Ok(begun) => begun,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only a runtime shutting down cancels the task; its connection is closed with it.
        Err(_) => Err(sqlx::Error::PoolClosed),
    }
}
