//! The producer side: outbox, relay, pause flag.

use std::collections::HashMap;
use std::time::Duration;

use lab_messaging::lapin::options::{QueueBindOptions, QueueDeclareOptions};
use lab_messaging::lapin::types::{AMQPValue, FieldTable};
use lab_messaging::{Envelope, outbox};
use lab_test_support::eventually;

use crate::helpers::{DEADLINE, EVENT, Recorder, connected_broker, queue_len, world};

#[tokio::test]
async fn a_committed_event_arrives_exactly_once_and_a_rolled_back_one_never() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let (_relay, _) = w.relay(&w.broker);
    let rolled_back = Envelope::new(EVENT, serde_json::json!({ "doomed": true }));

    let mut tx = lab_db::begin(&w.pool).await.unwrap();
    outbox::enqueue(&mut tx, &rolled_back).await.unwrap();
    tx.rollback().await.unwrap();
    let committed = w.commit_events(2).await;

    let effects = w.wait_for_effects(&committed).await;
    w.wait_for_drained_outbox().await;
    assert_eq!(effects.get(&committed[0]), Some(&1));
    assert_eq!(effects.get(&committed[1]), Some(&1));
    assert_eq!(effects.get(&rolled_back.message_id), None);
    assert_eq!(effects.len(), 2);
}

#[tokio::test]
async fn events_published_before_their_consumer_ever_started_wait_in_its_queue() {
    let w = world().await;
    let consumers = vec![(w.topology.service().to_owned(), vec![EVENT.to_owned()])];
    let (_relay, _) = w.relay_declaring(&w.broker, consumers);

    let ids = w.commit_events(5).await;
    w.wait_for_drained_outbox().await;
    let (_consumer, _) = w.consumer(Recorder).await;

    let effects = w.wait_for_effects(&ids).await;
    assert_eq!(effects.len(), 5);
    assert!(effects.values().all(|n| *n == 1), "{effects:?}");
}

#[tokio::test]
async fn events_committed_while_the_relay_is_down_arrive_exactly_once_from_the_next_relay() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let (first, _) = w.relay(&w.broker);
    first.stop().await;

    let ids = w.commit_events(20).await;
    let pending = outbox::status(&w.pool).await.unwrap().pending;
    let (_second, _) = w.relay(&w.broker);

    assert_eq!(pending, 20);
    let effects = w.wait_for_effects(&ids).await;
    assert_eq!(effects.len(), 20);
    assert!(effects.values().all(|n| *n == 1), "{effects:?}");
}

#[tokio::test]
async fn a_relay_killed_in_the_middle_of_publishing_loses_and_duplicates_no_effect() {
    let w = world().await;
    let tap = w.tap().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let ids = w.commit_events(600).await;

    let (first, _) = w.relay(&w.broker);
    // Kill it as soon as anything has been published: part of the outbox is sent, a batch may be
    // published but not yet marked sent.
    let started = eventually(DEADLINE, || async {
        let n = queue_len(&w.channel().await, &tap).await?;
        (n > 0).then_some(())
    })
    .await;
    first.stop().await;
    let (_second, _) = w.relay(&w.broker);

    assert!(started.is_some(), "the first relay never published");
    let effects = w.wait_for_effects(&ids).await;
    assert_eq!(effects.len(), 600);
    assert!(effects.values().all(|n| *n == 1), "an effect applied twice");
}

#[tokio::test]
async fn while_the_broker_is_unreachable_the_outbox_grows_then_drains() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let unreachable =
        lab_messaging::Broker::start(&w.env.unreachable_amqp(), "nowhere", w.env.shutdown_token());
    let (stranded, stranded_metrics) = w.relay(&unreachable);

    let ids = w.commit_events(10).await;
    let status = outbox::status(&w.pool).await.unwrap();
    let more = w.commit_events(5).await;
    let grown = outbox::status(&w.pool).await.unwrap();
    stranded.stop().await;
    let (_relay, metrics) = w.relay(&connected_broker(&w.env, &w.settings).await);

    assert_eq!(status.pending, 10);
    assert_eq!(grown.pending, 15);
    assert!(grown.oldest_pending_age >= status.oldest_pending_age);
    assert_eq!(stranded_metrics.relayed.get(), 0);
    let all: Vec<_> = ids.iter().chain(&more).copied().collect();
    let effects = w.wait_for_effects(&all).await;
    w.wait_for_drained_outbox().await;
    assert!(effects.values().all(|n| *n == 1));
    assert_eq!(metrics.relayed.get(), 15);
    assert_eq!(
        outbox::status(&w.pool).await.unwrap().oldest_pending_age,
        Duration::ZERO
    );
}

#[tokio::test]
async fn two_relays_on_one_outbox_never_publish_a_row_twice() {
    let w = world().await;
    let tap = w.tap().await;
    let (_a, a_metrics) = w.relay(&w.broker);
    let (_b, b_metrics) = w.relay(&connected_broker(&w.env, &w.settings).await);

    let ids = w.commit_events(500).await;

    w.wait_for_drained_outbox().await;
    let delivered = w.drain_queue(&tap).await;
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (id, _) in &delivered {
        *seen.entry(id.clone()).or_default() += 1;
    }
    assert_eq!(delivered.len(), 500, "published {} times", delivered.len());
    assert_eq!(seen.len(), 500);
    for id in &ids {
        assert_eq!(seen.get(&id.to_string()), Some(&1), "{id}");
    }
    assert_eq!(a_metrics.relayed.get() + b_metrics.relayed.get(), 500);
}

#[tokio::test]
async fn the_pause_flag_stops_every_relay_survives_a_restart_and_resume_drains() {
    let w = world().await;
    let tap = w.tap().await;
    let (a, a_metrics) = w.relay(&w.broker);
    let (b, b_metrics) = w.relay(&w.broker);

    outbox::pause(&w.pool).await.unwrap();
    w.commit_events(20).await;
    // Each relay sets its gauge after each pass over the outbox: 20 pending means it has looked
    // since the commit and published nothing.
    let both_looked = eventually(DEADLINE, || async {
        (a_metrics.outbox_pending.get() == 20 && b_metrics.outbox_pending.get() == 20).then_some(())
    })
    .await;
    let published_while_paused = w.drain_queue(&tap).await.len();
    a.stop().await;
    b.stop().await;
    let (_c, c_metrics) = w.relay(&w.broker);
    let restarted_looked = eventually(DEADLINE, || async {
        (c_metrics.outbox_pending.get() == 20).then_some(())
    })
    .await;
    let status = outbox::status(&w.pool).await.unwrap();
    let published_after_restart = w.drain_queue(&tap).await.len();

    outbox::resume(&w.pool).await.unwrap();

    assert!(both_looked.is_some() && restarted_looked.is_some());
    assert_eq!(published_while_paused, 0);
    assert_eq!(published_after_restart, 0);
    assert!(status.paused);
    assert_eq!(status.pending, 20);
    w.wait_for_drained_outbox().await;
    assert!(!outbox::status(&w.pool).await.unwrap().paused);
    let delivered = eventually(DEADLINE, || async {
        let n = queue_len(&w.channel().await, &tap).await?;
        (n == 20).then_some(n)
    })
    .await;
    assert_eq!(delivered, Some(20));
    assert_eq!(c_metrics.relayed.get(), 20);
}

#[tokio::test]
async fn an_outbox_row_that_is_not_an_envelope_is_dead_lettered_downstream_and_blocks_nothing() {
    let w = world().await;
    let (_consumer, _) = w.consumer(Recorder).await;
    let legacy = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO lab_outbox (message_id, routing_key, envelope) \
         VALUES ($1, $2, '{\"legacy\": true}')",
    )
    .bind(legacy)
    .bind(EVENT)
    .execute(&w.pool)
    .await
    .unwrap();
    let good = w.commit_events(1).await;

    let (_relay, _) = w.relay(&w.broker);

    let effects = w.wait_for_effects(&good).await;
    assert_eq!(effects.len(), 1);
    let dead = eventually(DEADLINE, || async {
        let rows = lab_messaging::dead_letters::list(&w.pool, 10).await.ok()?;
        (!rows.is_empty()).then_some(rows)
    })
    .await
    .expect("the legacy row was not dead-lettered");
    assert_eq!(dead[0].message_id, legacy);
    assert!(
        dead[0].error.starts_with("undecodable"),
        "{}",
        dead[0].error
    );
    w.wait_for_drained_outbox().await;
}

#[tokio::test]
async fn a_batch_refused_part_way_marks_what_was_confirmed_and_publishes_the_rest_next_round() {
    let w = world().await;
    // A queue that holds three messages and makes the broker refuse (nack) any more.
    let channel = w.channel().await;
    w.topology.declare_exchange(&channel).await.unwrap();
    let queue = format!("{}small", w.settings.prefix);
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(3));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            w.topology.exchange().into(),
            EVENT.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    outbox::pause(&w.pool).await.unwrap();
    let ids = w.commit_events(5).await;
    let (relay, metrics) = w.relay(&w.broker);

    outbox::resume(&w.pool).await.unwrap();

    // One batch of five: the first three confirmed and marked, the last two refused.
    let marked = eventually(DEADLINE, || async {
        let sent: Vec<uuid::Uuid> = sqlx::query_scalar(
            "SELECT message_id FROM lab_outbox WHERE sent_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(&w.pool)
        .await
        .ok()?;
        (sent.len() == 3).then_some(sent)
    })
    .await;
    assert_eq!(marked.as_deref(), Some(&ids[..3]));
    assert_eq!(outbox::status(&w.pool).await.unwrap().pending, 2);
    // Stopped before the queue makes room, so the next relay is the one that publishes the rest.
    relay.stop().await;
    let first = w.drain_queue(&queue).await;
    let (_next, next_metrics) = w.relay(&w.broker);
    w.wait_for_drained_outbox().await;
    let second = eventually(DEADLINE, || async {
        let got = w.drain_queue(&queue).await;
        (!got.is_empty()).then_some(got)
    })
    .await
    .unwrap_or_default();
    let first: Vec<String> = first.into_iter().map(|m| m.0).collect();
    let second: Vec<String> = second.into_iter().map(|m| m.0).collect();
    let expected: Vec<String> = ids.iter().map(ToString::to_string).collect();
    assert_eq!(first, expected[..3], "the confirmed rows");
    assert_eq!(
        second,
        expected[3..],
        "the refused rows, once each, and none of the confirmed ones again"
    );
    assert_eq!(metrics.relayed.get(), 3);
    assert_eq!(next_metrics.relayed.get(), 2);
}

#[tokio::test]
async fn messages_enqueued_together_are_published_in_the_order_given() {
    let w = world().await;
    let tap = w.tap().await;
    let events: Vec<Envelope> = (0..4)
        .map(|i| Envelope::new(EVENT, serde_json::json!({ "n": i })))
        .collect();
    let mut tx = lab_db::begin(&w.pool).await.unwrap();
    outbox::enqueue_all(&mut tx, &events).await.unwrap();
    tx.commit().await.unwrap();

    let (_relay, _) = w.relay(&w.broker);

    w.wait_for_drained_outbox().await;
    let delivered = eventually(DEADLINE, || async {
        let n = queue_len(&w.channel().await, &tap).await?;
        (n == 4).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "not all four were published");
    let got: Vec<String> = w.drain_queue(&tap).await.into_iter().map(|m| m.0).collect();
    let expected: Vec<String> = events.iter().map(|e| e.message_id.to_string()).collect();
    assert_eq!(got, expected);
}
