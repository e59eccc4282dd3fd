//! The catalog's side of the saga over real RabbitMQ: stock commands in, replies out through the
//! outbox, each applied once even when delivered twice.

use std::time::Duration;

use lab_catalog::seed::seed_id;
use lab_contracts::{Message, OrderLine, ReleaseStock, ReserveStock};
use lab_messaging::lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::lapin::{BasicProperties, Channel};
use lab_messaging::{Broker, Envelope, Topology};
use lab_test_support::{TestApp, eventually};
use serde_json::Value;
use uuid::Uuid;

use crate::catalog::{get, replicas};
use crate::helpers::env;

const DEADLINE: Duration = Duration::from_secs(20);

/// A channel on the test's broker, a tap queue bound to every catalog event, and the exchange.
async fn tap(app: &TestApp) -> (Channel, String, String) {
    let settings = app.env.amqp();
    let broker = Broker::start(&settings, "catalog-test", app.env.shutdown_token());
    let conn = eventually(DEADLINE, || {
        let b = broker.clone();
        async move { b.connection().ok() }
    })
    .await
    .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let topology = Topology::new(&settings, "catalog");
    topology.declare_exchange(&channel).await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let name = queue.name().to_string();
    channel
        .queue_bind(
            name.as_str().into(),
            topology.exchange().as_str().into(),
            "catalog.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    // The catalog's consumer declares and binds its queue on start, possibly after the first
    // command: declaring the same topology here (idempotent) means no command finds no queue.
    topology
        .declare(&channel, &lab_catalog::messages::routing_keys())
        .await
        .unwrap();
    (channel, name, topology.exchange())
}

async fn publish(channel: &Channel, exchange: &str, envelope: &Envelope) {
    channel
        .basic_publish(
            exchange.into(),
            envelope.kind.as_str().into(),
            BasicPublishOptions::default(),
            &envelope.to_body().unwrap(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The next event on the tap, as (type, envelope).
async fn next_event(channel: &Channel, queue: &str) -> Envelope {
    eventually(DEADLINE, || async {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .ok()??;
        Envelope::from_body(&got.delivery.data).ok()
    })
    .await
    .expect("an event arrived")
}

async fn stock_of(app: &TestApp, sku: &str) -> Value {
    get(app, &format!("/products/{}/inventory", seed_id(sku)))
        .await
        .3
}

fn reserve(order_id: Uuid, sku: &str, quantity: i32) -> Envelope {
    let command = ReserveStock {
        order_id,
        lines: vec![OrderLine {
            product_id: seed_id(sku),
            quantity,
            unit_price_minor: 1400,
        }],
    };
    Envelope::new(ReserveStock::NAME, serde_json::to_value(command).unwrap())
}

#[tokio::test]
async fn a_reserve_command_delivered_twice_reserves_once_and_replies_once() {
    let env = env().await;
    let app = replicas(&env, 1).await.remove(0);
    let (channel, queue, exchange) = tap(&app).await;
    let before = stock_of(&app, "LAB-MUG").await;
    let command = reserve(Uuid::now_v7(), "LAB-MUG", 3);

    publish(&channel, &exchange, &command).await;
    publish(&channel, &exchange, &command).await;
    let reply = next_event(&channel, &queue).await;
    let second = eventually(Duration::from_secs(1), || async {
        channel
            .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .ok()?
    })
    .await;
    let after = stock_of(&app, "LAB-MUG").await;

    assert_eq!(reply.kind, "catalog.stock-reserved");
    assert_eq!(reply.correlation_id, command.correlation_id);
    assert_eq!(reply.causation_id, Some(command.message_id));
    assert!(
        second.is_none(),
        "the duplicate delivery produced no second reply"
    );
    assert_eq!(
        after["reserved"].as_i64().unwrap() - before["reserved"].as_i64().unwrap(),
        3
    );
}

#[tokio::test]
async fn a_reserve_beyond_stock_fails_with_the_short_line_and_a_release_gives_stock_back() {
    let env = env().await;
    let app = replicas(&env, 1).await.remove(0);
    let (channel, queue, exchange) = tap(&app).await;
    let (short_order, order) = (Uuid::now_v7(), Uuid::now_v7());

    publish(
        &channel,
        &exchange,
        &reserve(short_order, "DEMO-LAST-UNIT", 2),
    )
    .await;
    let refused = next_event(&channel, &queue).await;
    publish(&channel, &exchange, &reserve(order, "LAB-TEE", 2)).await;
    let reserved = next_event(&channel, &queue).await;
    let release = Envelope::new(
        ReleaseStock::NAME,
        serde_json::to_value(ReleaseStock { order_id: order }).unwrap(),
    );
    publish(&channel, &exchange, &release).await;
    let released = next_event(&channel, &queue).await;
    let tee = stock_of(&app, "LAB-TEE").await;

    assert_eq!(refused.kind, "catalog.stock-reservation-failed");
    assert_eq!(refused.payload["short"][0]["requested"], 2);
    assert_eq!(refused.payload["short"][0]["available"], 1);
    assert_eq!(reserved.kind, "catalog.stock-reserved");
    assert_eq!(released.kind, "catalog.stock-released");
    assert_eq!(tee["reserved"], 0);
    assert_eq!(tee["on_hand"], 300);
}
