//! Lanes: one flow's messages are applied in the order they were published, while a flow that
//! is slow does not hold up the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lab_messaging::{Envelope, Handler, HandlerError};
use sqlx::PgConnection;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::helpers::{EVENT, Recorder, world};

/// A message of flow `correlation_id` carrying its position `n`.
fn message_of(correlation_id: Uuid, n: usize) -> Envelope {
    Envelope {
        correlation_id,
        ..Envelope::new(EVENT, serde_json::json!({ "n": n }))
    }
}

/// Records each message with its position as the effect's kind, after a pause that varies per
/// message, so that concurrent application would show up as a shuffled order.
struct Sequencer;

impl Handler for Sequencer {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        let n = message.payload["n"].as_u64().unwrap_or(u64::MAX);
        tokio::time::sleep(Duration::from_millis((n * 7) % 5)).await;
        sqlx::query("INSERT INTO effects (message_id, kind) VALUES ($1, $2)")
            .bind(message.message_id)
            .bind(format!("{}:{n}", message.correlation_id))
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test]
async fn each_flows_messages_are_applied_in_the_order_they_were_published() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Sequencer).await;
    let flows: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    let mut ids = Vec::new();

    for n in 0..20 {
        for flow in &flows {
            let event = message_of(*flow, n);
            w.publish_raw(&event.to_body().unwrap(), event.properties())
                .await;
            ids.push(event.message_id);
        }
    }
    w.wait_for_effects(&ids).await;

    for flow in &flows {
        let applied: Vec<String> =
            sqlx::query_scalar("SELECT kind FROM effects WHERE kind LIKE $1 || ':%' ORDER BY id")
                .bind(flow.to_string())
                .fetch_all(&w.pool)
                .await
                .unwrap();
        let expected: Vec<String> = (0..20).map(|n| format!("{flow}:{n}")).collect();
        assert_eq!(applied, expected, "flow {flow} was applied out of order");
    }
}

/// Holds every message of flow `slow` inside its transaction until a message of another flow
/// has been applied; fails it if that never happens.
struct Gate {
    /// The flow that waits.
    slow: Uuid,
    /// Signalled when another flow's message is applied.
    other_applied: Arc<Notify>,
    /// Calls for the slow flow's message (1 unless it failed and was retried).
    slow_calls: Arc<AtomicU32>,
}

impl Handler for Gate {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        if message.correlation_id == self.slow {
            self.slow_calls.fetch_add(1, Ordering::SeqCst);
            // Long enough for any healthy consumer to apply the other flow meanwhile.
            tokio::time::timeout(Duration::from_secs(10), self.other_applied.notified())
                .await
                .map_err(|_| HandlerError::new("no other flow was applied meanwhile"))?;
        }
        Recorder.handle(tx, message).await?;
        if message.correlation_id != self.slow {
            self.other_applied.notify_one();
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_flow_that_is_slow_does_not_hold_up_the_others() {
    let w = world().await;
    // Two flows that land in different lanes (the lane is the correlation id modulo the lanes).
    let lanes = u128::from(w.settings.lanes);
    let slow = Uuid::from_u128(lanes * 1_000);
    let quick = Uuid::from_u128(lanes * 1_000 + 1);
    let gate = Gate {
        slow,
        other_applied: Arc::new(Notify::new()),
        slow_calls: Arc::new(AtomicU32::new(0)),
    };
    let slow_calls = Arc::clone(&gate.slow_calls);
    let (_consumer, metrics) = w.consumer(gate).await;
    let first = message_of(slow, 0);
    let second = message_of(quick, 0);

    w.publish_raw(&first.to_body().unwrap(), first.properties())
        .await;
    w.publish_raw(&second.to_body().unwrap(), second.properties())
        .await;
    let effects = w
        .wait_for_effects(&[first.message_id, second.message_id])
        .await;

    assert_eq!(
        slow_calls.load(Ordering::SeqCst),
        1,
        "the slow flow's message had to wait for a retry: the other flow waited behind it"
    );
    assert_eq!(metrics.retries.get(), 0);
    assert_eq!(effects.get(&first.message_id), Some(&1));
    assert_eq!(effects.get(&second.message_id), Some(&1));
}
