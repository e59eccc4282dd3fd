//! Losing the broker connection or every database session mid-stream loses and duplicates no
//! effect: the relay and the consumer reconnect, re-declare and resume.

use lab_test_support::eventually;

use crate::helpers::{DEADLINE, Recorder, world};

#[tokio::test]
async fn relay_and_consumer_resume_after_the_broker_connection_drops_mid_stream() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let (_relay, _) = w.relay(&w.broker);
    let mut ids = w.commit_events(300).await;
    let flowing = eventually(DEADLINE, || async {
        (!w.effects().await.is_empty()).then_some(())
    })
    .await;

    // As the broker does on a restart: the connection goes, with deliveries unacked and
    // publishes unconfirmed.
    let conn = w.broker.connection().expect("connected");
    conn.close(320, "test: CONNECTION_FORCED".into())
        .await
        .expect("close");
    ids.extend(w.commit_events(50).await);

    assert!(flowing.is_some());
    let effects = w.wait_for_effects(&ids).await;
    assert_eq!(effects.len(), 350);
    assert!(effects.values().all(|n| *n == 1), "an effect applied twice");
    w.wait_for_drained_outbox().await;
}

#[tokio::test]
async fn relay_and_consumer_resume_after_every_database_session_is_killed() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let (_relay, _) = w.relay(&w.broker);
    let mut ids = w.commit_events(300).await;
    let flowing = eventually(DEADLINE, || async {
        (!w.effects().await.is_empty()).then_some(())
    })
    .await;

    // What a PostgreSQL restart does to the service: every session, the LISTEN one included,
    // is cut.
    let mut admin = w.env.db().admin_connection().await.expect("admin");
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate");
    let more = eventually(DEADLINE, || async {
        // The pool notices dead sessions on use; a commit may fail once on one.
        let event = lab_messaging::Envelope::new(crate::helpers::EVENT, serde_json::json!({}));
        let mut tx = lab_db::begin(&w.pool).await.ok()?;
        lab_messaging::outbox::enqueue(&mut tx, &event).await.ok()?;
        tx.commit().await.ok()?;
        Some(event.message_id)
    })
    .await
    .expect("cannot commit after the sessions were killed");
    ids.push(more);

    assert!(flowing.is_some());
    assert!(!killed.is_empty());
    let effects = w.wait_for_effects(&ids).await;
    assert_eq!(effects.len(), 301);
    assert!(effects.values().all(|n| *n == 1), "an effect applied twice");
    w.wait_for_drained_outbox().await;
}
