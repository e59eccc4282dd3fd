//! The deadline poller: every saga waiting on someone has a row in `saga_deadlines`; this task
//! claims due rows and feeds `Event::Timeout` through the same step as a message
//! ([`orchestrator::apply`]), one transaction per deadline. Rows, not delayed messages, so a
//! deadline outlives any restart; `FOR UPDATE … SKIP LOCKED` on both the deadline and its saga
//! means two replicas never fire one deadline twice, and the poller never waits on (or
//! deadlocks with) a consumer that holds the saga.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::metrics::SagaMetrics;
use crate::orchestrator::{self, Outcome, StepError};
use crate::saga::{Event, State, Timeouts};

/// Due deadlines fired per wake-up before the poller sleeps again; the rest wait one interval.
const BATCH: usize = 100;

/// The running poller; stops with the shutdown token it was started with.
pub struct Poller {
    /// Its task, awaited by [`Poller::stopped`].
    tracker: TaskTracker,
}

impl Poller {
    /// Polls every `every` until `shutdown`.
    pub fn start(
        pool: PgPool,
        timeouts: Timeouts,
        metrics: SagaMetrics,
        every: Duration,
        shutdown: &CancellationToken,
    ) -> Self {
        let tracker = TaskTracker::new();
        tracker.spawn(run(pool, timeouts, metrics, every, shutdown.clone()));
        tracker.close();
        Self { tracker }
    }

    /// Waits until the task has stopped (after the shutdown token is cancelled).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

async fn run(
    pool: PgPool,
    timeouts: Timeouts,
    metrics: SagaMetrics,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the last attempt failed: an outage is logged when it starts and when it ends, not
    // four times a second.
    let mut failing = false;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for _ in 0..BATCH {
            if shutdown.is_cancelled() {
                return;
            }
            let fired = fire_one(&pool, &timeouts).await;
            if failing && fired.is_ok() {
                failing = false;
                tracing::info!("deadline poller recovered");
            }
            match fired {
                Ok(Some(outcome)) => {
                    metrics.deadlines_fired.inc();
                    metrics.observe(&outcome);
                }
                Ok(None) => break,
                Err(e) => {
                    // The database is down or the step failed: the row stays, the next tick retries.
                    if !failing {
                        tracing::warn!(error = %e, "deadline poller cannot fire deadlines");
                    }
                    failing = true;
                    break;
                }
            }
        }
    }
}

/// Fires the earliest due deadline nobody else holds, returning what it did to the saga; `None`
/// when no deadline is due.
pub async fn fire_one(pool: &PgPool, timeouts: &Timeouts) -> Result<Option<Outcome>, StepError> {
    let mut tx = lab_db::begin(pool).await?;
    let due: Option<(Uuid, String)> = sqlx::query_as(
        "SELECT d.order_id, d.state FROM saga_deadlines d JOIN sagas s USING (order_id) \
         WHERE d.due_at <= now() ORDER BY d.due_at LIMIT 1 \
         FOR UPDATE OF d, s SKIP LOCKED",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some((order_id, state_name)) = due else {
        return Ok(None);
    };
    let Some(state) = State::parse(&state_name) else {
        // Unreadable rows would fire forever; drop it, loudly.
        tracing::error!(%order_id, state = %state_name, "deadline for an unknown state dropped");
        sqlx::query("DELETE FROM saga_deadlines WHERE order_id = $1")
            .bind(order_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(Some(Outcome::UnknownSaga));
    };
    let cause = orchestrator::deadline_cause(&mut tx, order_id, state).await?;
    let outcome = orchestrator::apply(
        &mut tx,
        order_id,
        &Event::Timeout { state },
        &cause,
        timeouts,
    )
    .await?;
    tx.commit().await?;
    match &outcome {
        Outcome::Applied { from, to } => tracing::info!(%order_id, from = from.as_str(),
            to = to.as_str(), "saga deadline passed"),
        Outcome::Ignored(why) => tracing::info!(%order_id, why, "stale saga deadline ignored"),
        Outcome::UnknownSaga => {}
    }
    Ok(Some(outcome))
}
