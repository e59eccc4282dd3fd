//! The orchestrator over real RabbitMQ and PostgreSQL: the test publishes what orders, catalog
//! and payments would, and taps the commands checkout sends back.

use std::time::Duration;

use lab_checkout::TimeoutSettings;
use lab_contracts::{
    CreatePaymentSession, Message, PaymentAuthorized, PaymentCaptured, PaymentSessionCreated,
    ReserveStock, SagaTransitioned, StockCommitted, StockReservationFailed, StockReserved,
};
use lab_test_support::{TestApp, TestEnv};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::{Bus, env, kinds, order, settings, usd};

/// How long the tap must stay quiet to show that nothing more was sent: the relay publishes
/// within milliseconds of a commit, so a second is ample.
pub const QUIET: Duration = Duration::from_secs(1);

/// The payment window of the timeout tests: long enough for the session step to land first.
pub const SHORT_PAYMENT_MS: u64 = 1_500;

pub async fn saga_of(app: &TestApp, order_id: Uuid) -> Value {
    let (status, body) = app.get_json(&format!("/sagas/{order_id}")).await;
    assert_eq!(status, 200, "{body:#}");
    body
}

fn history_events(saga: &Value) -> Vec<String> {
    saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}→{}",
                t["event"].as_str().unwrap(),
                t["to"].as_str().unwrap()
            )
        })
        .collect()
}

pub fn payload<T: Message>(message: &lab_messaging::Envelope) -> T {
    assert_eq!(message.kind, T::NAME);
    serde_json::from_value(message.payload.clone()).unwrap()
}

/// Checkout started with a short payment window, its bus, and an order it holds a session for.
pub async fn awaiting_payment(env: &TestEnv) -> (TestApp, Bus, Uuid) {
    let mut s = settings(env);
    s.timeouts = TimeoutSettings {
        payment_ms: SHORT_PAYMENT_MS,
        ..TimeoutSettings::default()
    };
    let app = env.spawn(lab_checkout::build, s).await;
    let bus = Bus::connect(env).await;
    let order_id = Uuid::now_v7();
    through_session(&bus, order_id).await;
    (app, bus, order_id)
}

/// Drives a new saga for `order_id` to the payment session: placed, stock reserved, session
/// opened.
pub async fn through_session(bus: &Bus, order_id: Uuid) {
    bus.step_on(&order(order_id)).await;
    bus.step_on(&StockReserved { order_id }).await;
    bus.step_on(&session_created(order_id)).await;
}

pub fn session_created(order_id: Uuid) -> PaymentSessionCreated {
    PaymentSessionCreated {
        order_id,
        provider: "stripe".into(),
        session_id: "cs_test_1".into(),
        payment_url: "http://psp.invalid/pay/cs_test_1".into(),
    }
}

#[tokio::test]
async fn an_order_placed_starts_a_saga_that_asks_catalog_to_reserve_its_lines() {
    let env = env().await;
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    let placed = order(order_id);

    let cause = bus.send(&placed).await;
    let sent = bus.step().await;
    let saga = saga_of(&app, order_id).await;

    assert_eq!(kinds(&sent), [ReserveStock::NAME, SagaTransitioned::NAME]);
    let reserve: ReserveStock = payload(&sent[0]);
    assert_eq!(reserve.order_id, order_id);
    assert_eq!(reserve.lines, placed.lines);
    assert_eq!(sent[0].correlation_id, cause.correlation_id);
    assert_eq!(sent[0].causation_id, Some(cause.message_id));
    let transitioned: SagaTransitioned = payload(&sent[1]);
    assert_eq!(transitioned.to, "Initiated");
    assert!(!transitioned.terminal);
    assert_eq!(saga["state"], "Initiated");
    assert_eq!(saga["version"], 1);
    assert_eq!(saga["total_minor"], 3000);
    assert_eq!(saga["deadline"]["state"], "Initiated");
    assert_eq!(
        saga["history"][0]["message_id"],
        cause.message_id.to_string()
    );
    assert_eq!(saga["history"][0]["commands"][0], "ReserveStock");
}

#[tokio::test]
async fn a_second_order_placed_for_the_same_order_starts_nothing_and_is_recorded() {
    let env = env().await;
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    let first = bus.send(&order(order_id)).await;
    bus.step().await;

    bus.send(&order(order_id)).await;
    bus.publish(&first).await;
    let more = bus.drain(QUIET).await;
    let saga = saga_of(&app, order_id).await;

    assert_eq!(kinds(&more), Vec::<&str>::new());
    assert_eq!(saga["state"], "Initiated");
    assert_eq!(saga["version"], 1);
    let history = saga["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "the redelivery is absorbed by the inbox");
    assert_eq!(
        history[1]["ignored"],
        "the saga of this order has already started"
    );
}

#[tokio::test]
async fn stock_reserved_asks_payments_for_a_session_for_the_total_by_the_chosen_provider() {
    let env = env().await;
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    bus.step_on(&order(order_id)).await;

    let sent = bus.step_on(&StockReserved { order_id }).await;
    let saga = saga_of(&app, order_id).await;

    assert_eq!(
        kinds(&sent),
        [CreatePaymentSession::NAME, SagaTransitioned::NAME]
    );
    let session: CreatePaymentSession = payload(&sent[0]);
    assert_eq!(session.amount, usd(3000));
    assert_eq!(session.provider, "stripe");
    let window = session.expires_at - chrono::Utc::now();
    assert!(
        window > chrono::Duration::minutes(14) && window <= chrono::Duration::minutes(15),
        "the default payment window is 15 minutes, got {window}"
    );
    assert_eq!(saga["state"], "StockReserved");
    assert_eq!(saga["version"], 2);
    assert_eq!(saga["deadline"]["state"], "StockReserved");
}

#[tokio::test]
async fn no_stock_rejects_the_saga_and_tells_orders_it_is_final() {
    let env = env().await;
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    bus.step_on(&order(order_id)).await;

    let failed = StockReservationFailed {
        order_id,
        reason: "not enough stock".into(),
        short: vec![],
    };
    let sent = bus.step_on(&failed).await;
    let saga = saga_of(&app, order_id).await;

    assert_eq!(kinds(&sent), [SagaTransitioned::NAME]);
    let transitioned: SagaTransitioned = payload(&sent[0]);
    assert_eq!(
        (transitioned.from.as_str(), transitioned.to.as_str()),
        ("Initiated", "Rejected")
    );
    assert!(transitioned.terminal);
    assert!(transitioned.compensations.is_empty());
    assert_eq!(saga["state"], "Rejected");
    assert_eq!(saga["terminal"], true);
    assert_eq!(saga["deadline"], Value::Null);
}

#[tokio::test]
async fn the_happy_path_captures_commits_and_completes_with_its_whole_history() {
    let env = env().await;
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    through_session(&bus, order_id).await;

    let capture = bus
        .step_on(&PaymentAuthorized {
            order_id,
            amount: usd(3000),
        })
        .await
        .remove(0);
    let commit = bus
        .step_on(&PaymentCaptured {
            order_id,
            amount: usd(3000),
        })
        .await
        .remove(0);
    let last = bus.step_on(&StockCommitted { order_id }).await;
    let saga = saga_of(&app, order_id).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();

    let capture: lab_contracts::CapturePayment = payload(&capture);
    assert_eq!(capture.amount, usd(3000));
    assert_eq!(
        payload::<lab_contracts::CommitStock>(&commit).order_id,
        order_id
    );
    let done: SagaTransitioned = payload(last.last().unwrap());
    assert_eq!(done.to, "Completed");
    assert!(done.terminal);
    assert_eq!(saga["state"], "Completed");
    assert_eq!(saga["version"], 6);
    assert_eq!(saga["deadline"], Value::Null);
    assert_eq!(
        history_events(&saga),
        [
            "OrderPlaced→Initiated",
            "StockReserved→StockReserved",
            "PaymentSessionCreated→PaymentSessionCreated",
            "PaymentAuthorized→PaymentAuthorized",
            "PaymentCaptured→Captured",
            "StockCommitted→Completed",
        ]
    );
    assert!(
        metrics.contains(r#"saga_steps_total{to="Completed"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_declined_payment_a_failed_capture_and_a_wrong_amount_each_compensate_over_the_wire() {
    let env = env().await;
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    let bus = Bus::connect(&env).await;
    let mut outcomes = Vec::new();

    for case in ["declined", "capture failed", "wrong amount"] {
        let order_id = Uuid::now_v7();
        through_session(&bus, order_id).await;
        let sent = match case {
            "declined" => {
                let reason = "card declined".into();
                bus.step_on(&lab_contracts::PaymentDeclined { order_id, reason })
                    .await
            }
            "capture failed" => {
                let amount = usd(3000);
                bus.step_on(&PaymentAuthorized { order_id, amount }).await;
                let reason = "processor error".into();
                bus.step_on(&lab_contracts::PaymentCaptureFailed { order_id, reason })
                    .await
            }
            _ => {
                let amount = usd(2999);
                bus.step_on(&PaymentAuthorized { order_id, amount }).await
            }
        };
        let saga = saga_of(&app, order_id).await;
        outcomes.push((case, kinds(&sent).join(" "), saga["state"].clone()));
    }

    assert_eq!(
        outcomes,
        [
            (
                "declined",
                "checkout.release-stock checkout.void-payment checkout.saga-transitioned".into(),
                Value::from("Cancelled")
            ),
            (
                "capture failed",
                "checkout.void-payment checkout.release-stock checkout.saga-transitioned".into(),
                Value::from("Cancelled")
            ),
            (
                "wrong amount",
                "checkout.refund-payment checkout.release-stock checkout.saga-transitioned".into(),
                Value::from("RequiresReview")
            ),
        ]
    );
}

#[tokio::test]
async fn a_saga_restarted_between_every_pair_of_steps_still_completes_once() {
    let env = env().await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    let total = || usd(3000);
    let events: Vec<lab_messaging::Envelope> = vec![
        envelope(&order(order_id)),
        envelope(&StockReserved { order_id }),
        envelope(&session_created(order_id)),
        envelope(&PaymentAuthorized {
            order_id,
            amount: total(),
        }),
        envelope(&PaymentCaptured {
            order_id,
            amount: total(),
        }),
        envelope(&StockCommitted { order_id }),
    ];
    let mut sent = Vec::new();

    for event in &events {
        let app = env.spawn(lab_checkout::build, settings(&env)).await;
        bus.publish(event).await;
        sent.extend(bus.step().await);
        app.shutdown().await.unwrap();
    }
    let app = env.spawn(lab_checkout::build, settings(&env)).await;
    sent.extend(bus.drain(QUIET).await);
    let saga = saga_of(&app, order_id).await;

    let commands: Vec<&str> = kinds(&sent)
        .into_iter()
        .filter(|k| *k != SagaTransitioned::NAME)
        .collect();
    assert_eq!(
        commands,
        [
            ReserveStock::NAME,
            CreatePaymentSession::NAME,
            lab_contracts::CapturePayment::NAME,
            lab_contracts::CommitStock::NAME,
        ]
    );
    assert_eq!(saga["state"], "Completed");
    assert_eq!(saga["history"].as_array().unwrap().len(), 6);
}

fn envelope<T: Message + serde::Serialize>(message: &T) -> lab_messaging::Envelope {
    lab_messaging::Envelope::new(T::NAME, serde_json::to_value(message).unwrap())
}
