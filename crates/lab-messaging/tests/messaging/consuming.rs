//! The consumer side: the inbox and undecodable messages.

use lab_messaging::Envelope;
use lab_messaging::lapin::BasicProperties;
use lab_test_support::eventually;

use crate::helpers::{DEADLINE, EVENT, Flaky, Recorder, world};

#[tokio::test]
async fn a_redelivered_message_changes_nothing() {
    let w = world().await;
    let (_consumer, metrics) = w.consumer(Recorder).await;
    let event = Envelope::new(EVENT, serde_json::json!({ "amount": 1200 }));
    let body = event.to_body().unwrap();

    w.publish_raw(&body, event.properties()).await;
    w.publish_raw(&body, event.properties()).await;

    let skipped = eventually(DEADLINE, || async {
        (metrics.duplicates.get() == 1).then_some(())
    })
    .await;
    assert!(
        skipped.is_some(),
        "the second delivery was never recognised"
    );
    let effects = w.effects().await;
    assert_eq!(effects.get(&event.message_id), Some(&1));
    assert_eq!(effects.len(), 1);
    let inbox: i64 = sqlx::query_scalar("SELECT count(*) FROM lab_inbox WHERE message_id = $1")
        .bind(event.message_id)
        .fetch_one(&w.pool)
        .await
        .unwrap();
    assert_eq!(inbox, 1);
}

#[tokio::test]
async fn an_undecodable_message_goes_straight_to_the_dead_letters() {
    let w = world().await;
    let handler = Flaky::default();
    let (_consumer, metrics) = w.consumer(handler.clone()).await;

    w.publish_raw(
        b"{not json",
        BasicProperties::default().with_type("test.garbage".into()),
    )
    .await;

    let dead = eventually(DEADLINE, || async {
        let rows = lab_messaging::dead_letters::list(&w.pool, 10).await.ok()?;
        // The row comes first, then the copy in the dead-letter queue, then the count.
        (!rows.is_empty() && metrics.dead_letters.get() == 1).then_some(rows)
    })
    .await;
    let dead = match dead {
        Some(d) => d,
        None => panic!(
            "no dead letter recorded; main {:?} dead {:?} list {:?}",
            crate::helpers::queue_len(&w.channel().await, &w.topology.queue()).await,
            crate::helpers::queue_len(&w.channel().await, &w.topology.dead_queue()).await,
            lab_messaging::dead_letters::list(&w.pool, 10).await
        ),
    };
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].error.starts_with("undecodable message"),
        "{}",
        dead[0].error
    );
    assert_eq!(dead[0].body, "{not json");
    assert_eq!(dead[0].message_type, "test.garbage");
    assert_eq!(dead[0].attempts, 0);
    assert_eq!(handler.calls.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!(metrics.dead_letters.get(), 1);
    assert_eq!(metrics.retries.get(), 0);
    let parked = w.drain_queue(&w.topology.dead_queue()).await;
    assert_eq!(parked.len(), 1);
}
