//! Batches: deliveries already waiting in a lane are applied in one transaction, and a message
//! that fails inside a batch is retried and dead-lettered alone while the others apply once.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use lab_messaging::{Envelope, Handler, HandlerError, dead_letters};
use lab_test_support::eventually;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::helpers::{DEADLINE, EVENT, World, world};

/// Long enough for the rest of the queue to reach the lane while its first message is applied
/// (local broker: milliseconds), so they wait there together even if the lane started on the
/// first one alone.
const HOLD: Duration = Duration::from_millis(500);

/// Applies each message by recording the transaction it ran in (as the effect's kind); holds
/// the flow's first message for [`HOLD`] and refuses `poison`, counting its calls.
struct Batcher {
    /// The flow's first message, applied on its own while the others queue up.
    first: Uuid,
    /// A message the handler always refuses.
    poison: Option<Uuid>,
    /// Calls for the poison message.
    poison_calls: Arc<AtomicU32>,
}

impl Handler for Batcher {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        if message.message_id == self.first {
            tokio::time::sleep(HOLD).await;
        }
        if Some(message.message_id) == self.poison {
            self.poison_calls.fetch_add(1, Ordering::SeqCst);
            return Err(HandlerError::new(
                "poison: this message can never be applied",
            ));
        }
        sqlx::query("INSERT INTO effects (message_id, kind) VALUES ($1, txid_current()::text)")
            .bind(message.message_id)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// `n` messages of one flow (so one lane, in this order), published to the test's queue before
/// any consumer reads it.
async fn queued_flow(w: &World, n: usize) -> Vec<Envelope> {
    w.topology
        .declare(&w.channel().await, &[EVENT.to_owned()])
        .await
        .expect("topology");
    let flow = Uuid::now_v7();
    let mut messages = Vec::with_capacity(n);
    for i in 0..n {
        let message = Envelope {
            correlation_id: flow,
            ..Envelope::new(EVENT, serde_json::json!({ "n": i }))
        };
        w.publish_raw(&message.to_body().expect("body"), message.properties())
            .await;
        messages.push(message);
    }
    messages
}

/// (message id, transaction id) of every effect, in the order they were written.
async fn effects_in_order(w: &World) -> Vec<(Uuid, String)> {
    sqlx::query_as("SELECT message_id, kind FROM effects ORDER BY id")
        .fetch_all(&w.pool)
        .await
        .expect("effects")
}

#[tokio::test]
async fn deliveries_waiting_in_a_lane_are_applied_in_one_transaction_in_order() {
    let w = world().await;
    let messages = queued_flow(&w, 8).await;
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let handler = Batcher {
        first: ids[0],
        poison: None,
        poison_calls: Arc::default(),
    };

    let (_consumer, metrics) = w.consumer(handler).await;

    w.wait_for_effects(&ids).await;
    let effects = effects_in_order(&w).await;
    let applied: Vec<Uuid> = effects.iter().map(|e| e.0).collect();
    assert_eq!(applied, ids, "the flow was applied out of order or twice");
    // The lane starts on what has reached it (the first message, perhaps a few more), holds
    // that batch for HOLD, and meanwhile the rest arrive: all of them make one more batch.
    let mut transactions: Vec<&String> = effects.iter().map(|e| &e.1).collect();
    transactions.dedup();
    assert!(
        transactions.len() <= 2,
        "eight messages waiting together took {} transactions: {effects:?}",
        transactions.len()
    );
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM lab_inbox")
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 8);
    assert_eq!(metrics.duplicates.get(), 0);
}

#[tokio::test]
async fn a_poison_message_in_a_batch_is_retried_and_dead_lettered_alone_and_the_rest_apply_once() {
    let w = world().await;
    let messages = queued_flow(&w, 8).await;
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let poison = ids[4];
    let handler = Batcher {
        first: ids[0],
        poison: Some(poison),
        poison_calls: Arc::default(),
    };
    let poison_calls = Arc::clone(&handler.poison_calls);

    let (_consumer, metrics) = w.consumer(handler).await;

    let good: Vec<Uuid> = ids.iter().copied().filter(|id| *id != poison).collect();
    w.wait_for_effects(&good).await;
    let dead = eventually(DEADLINE, || async {
        let rows = dead_letters::list(&w.pool, 10).await.ok()?;
        (!rows.is_empty() && metrics.dead_letters.get() == 1).then_some(rows)
    })
    .await
    .expect("the poison message was never dead-lettered");
    let applied: Vec<Uuid> = effects_in_order(&w).await.iter().map(|e| e.0).collect();
    assert_eq!(
        applied, good,
        "the others were applied out of order, twice, or the poison's effect stayed"
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, poison);
    assert_eq!(dead[0].attempts, 3);
    // Once inside the batch that rolled back, then its own three attempts (first + 2 retries).
    assert_eq!(poison_calls.load(Ordering::SeqCst), 4);
    assert_eq!(metrics.retries.get(), 2);
    let inboxed: Vec<Uuid> = sqlx::query_scalar("SELECT message_id FROM lab_inbox")
        .fetch_all(&w.pool)
        .await
        .unwrap();
    assert_eq!(inboxed.len(), 7);
    assert!(
        !inboxed.contains(&poison),
        "the poison message's inbox row stayed"
    );
}

#[tokio::test]
async fn a_message_delivered_twice_in_one_batch_is_applied_once() {
    let w = world().await;
    let messages = queued_flow(&w, 3).await;
    let again = &messages[1];
    w.publish_raw(&again.to_body().unwrap(), again.properties())
        .await;
    let ids: Vec<Uuid> = messages.iter().map(|m| m.message_id).collect();
    let handler = Batcher {
        first: ids[0],
        poison: None,
        poison_calls: Arc::default(),
    };

    let (_consumer, metrics) = w.consumer(handler).await;

    w.wait_for_effects(&ids).await;
    let counted = eventually(DEADLINE, || async {
        (metrics.duplicates.get() == 1).then_some(())
    })
    .await;
    assert!(counted.is_some(), "the second copy was not recognised");
    let applied: Vec<Uuid> = effects_in_order(&w).await.iter().map(|e| e.0).collect();
    assert_eq!(applied, ids);
}
