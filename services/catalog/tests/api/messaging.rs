//! The catalog's side of the saga over real RabbitMQ: stock commands in, replies out through the
//! outbox, each applied once even when delivered twice.

use std::time::Duration;

use lab_catalog::seed::seed_id;
use lab_contracts::{Message, OrderLine, ReleaseStock, ReserveStock};
use lab_messaging::Envelope;
use lab_test_support::{BUS_DEADLINE, Bus, TestApp};
use serde_json::Value;
use uuid::Uuid;

use crate::catalog::{get, replicas};
use crate::helpers::env;

/// The shared test bus with the catalog's queue declared and a tap on every catalog event.
async fn tap(app: &TestApp) -> Bus {
    let consumers = [("catalog", lab_catalog::messages::routing_keys())];
    Bus::connect(&app.env, &consumers, "catalog.#").await
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
    let bus = tap(&app).await;
    let before = stock_of(&app, "LAB-MUG").await;
    let command = reserve(Uuid::now_v7(), "LAB-MUG", 3);

    bus.publish(&command).await;
    bus.publish(&command).await;
    let reply = bus
        .next_within(BUS_DEADLINE)
        .await
        .expect("an event arrived");
    let second = bus.next_within(Duration::from_secs(1)).await;
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
    let bus = tap(&app).await;
    let (short_order, order) = (Uuid::now_v7(), Uuid::now_v7());

    bus.publish(&reserve(short_order, "DEMO-LAST-UNIT", 2))
        .await;
    let refused = bus
        .next_within(BUS_DEADLINE)
        .await
        .expect("an event arrived");
    bus.publish(&reserve(order, "LAB-TEE", 2)).await;
    let reserved = bus
        .next_within(BUS_DEADLINE)
        .await
        .expect("an event arrived");
    let release = Envelope::new(
        ReleaseStock::NAME,
        serde_json::to_value(ReleaseStock { order_id: order }).unwrap(),
    );
    bus.publish(&release).await;
    let released = bus
        .next_within(BUS_DEADLINE)
        .await
        .expect("an event arrived");
    let tee = stock_of(&app, "LAB-TEE").await;

    assert_eq!(refused.kind, "catalog.stock-reservation-failed");
    assert_eq!(refused.payload["short"][0]["requested"], 2);
    assert_eq!(refused.payload["short"][0]["available"], 1);
    assert_eq!(reserved.kind, "catalog.stock-reserved");
    assert_eq!(released.kind, "catalog.stock-released");
    assert_eq!(tee["reserved"], 0);
    assert_eq!(tee["on_hand"], 300);
}
