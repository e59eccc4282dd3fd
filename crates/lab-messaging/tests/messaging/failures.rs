//! A failing handler: retries through the TTL'd queues, dead letters, replay.

use std::sync::atomic::Ordering;

use lab_messaging::consumer::{ATTEMPTS_HEADER, ERROR_HEADER};
use lab_messaging::dead_letters;
use lab_messaging::lapin::types::AMQPValue;
use lab_test_support::eventually;

use crate::helpers::{DEADLINE, Flaky, world};

#[tokio::test]
async fn a_failing_handler_retries_then_dead_letters_with_the_error_and_replay_applies_it() {
    let w = world().await;
    let handler = Flaky::default();
    handler.failing.store(true, Ordering::SeqCst);
    let (_consumer, metrics) = w.consumer(handler.clone()).await;
    let (_relay, _) = w.relay(&w.broker);

    let ids = w.commit_events(1).await;

    let dead = eventually(DEADLINE, || async {
        let rows = dead_letters::list(&w.pool, 10).await.ok()?;
        // The row comes first, then the copy in the dead-letter queue, then the count.
        (!rows.is_empty() && metrics.dead_letters.get() == 1).then_some(rows)
    })
    .await
    .expect("the message was never dead-lettered");
    // One first attempt and one per retry queue (100 ms, 200 ms).
    assert_eq!(handler.calls.load(Ordering::SeqCst), 3);
    assert_eq!(metrics.retries.get(), 2);
    assert_eq!(metrics.dead_letters.get(), 1);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, ids[0]);
    assert_eq!(dead[0].attempts, 3);
    assert!(dead[0].error.contains("boom"), "{}", dead[0].error);
    assert!(dead[0].replayed_at.is_none());
    assert!(
        w.effects().await.is_empty(),
        "a failed attempt left its effect behind"
    );
    let parked = w.drain_queue(&w.topology.dead_queue()).await;
    assert_eq!(parked.len(), 1);
    let headers = parked[0].1.headers().clone().unwrap_or_default();
    assert_eq!(
        headers.inner().get(ATTEMPTS_HEADER),
        Some(&AMQPValue::LongInt(3))
    );
    assert!(
        matches!(headers.inner().get(ERROR_HEADER), Some(AMQPValue::LongString(e)) if e.to_string().contains("boom"))
    );

    handler.failing.store(false, Ordering::SeqCst);
    let replayed = dead_letters::replay(&w.pool, &w.broker, &w.topology, dead[0].id)
        .await
        .unwrap();

    assert!(replayed.replayed_at.is_some());
    assert_eq!(replayed.replay_count, 1);
    let effects = w.wait_for_effects(&ids).await;
    assert_eq!(effects.get(&ids[0]), Some(&1));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn replaying_an_unknown_dead_letter_is_an_error() {
    let w = world().await;

    let result = dead_letters::replay(&w.pool, &w.broker, &w.topology, 4242).await;

    assert!(matches!(
        result,
        Err(lab_messaging::MessagingError::NoSuchDeadLetter(4242))
    ));
}
