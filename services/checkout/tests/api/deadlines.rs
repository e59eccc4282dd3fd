//! Deadlines over real RabbitMQ and PostgreSQL: a payment window that closes fires from its row,
//! once across replicas, after a restart too, and money that comes late is refunded once.

use lab_contracts::{
    Message, PaymentAuthorized, RefundPayment, ReleaseStock, SagaTransitioned, VoidPayment,
};
use serde_json::Value;

use crate::helpers::{env, kinds, settings, usd};
use crate::saga::{QUIET, SHORT_PAYMENT_MS, awaiting_payment, payload, saga_of};

#[tokio::test]
async fn an_unpaid_session_expires_from_its_deadline_row_releasing_stock_voiding_and_cancelling() {
    let env = env().await;
    let (app, bus, order_id) = awaiting_payment(&env).await;

    let sent = bus.step().await;
    let saga = saga_of(&app, order_id).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();

    assert_eq!(
        kinds(&sent),
        [
            ReleaseStock::NAME,
            VoidPayment::NAME,
            SagaTransitioned::NAME
        ]
    );
    assert!(
        metrics.contains("saga_deadlines_fired_total 1"),
        "{metrics}"
    );
    let cancelled: SagaTransitioned = payload(&sent[2]);
    assert_eq!(cancelled.to, "Cancelled");
    assert_eq!(cancelled.event, "Timeout");
    assert_eq!(cancelled.compensations, ["ReleaseStock", "VoidPayment"]);
    assert_eq!(saga["state"], "Cancelled");
    assert_eq!(saga["deadline"], Value::Null);
    let last = saga["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["detail"]["Timeout"]["state"], "PaymentSessionCreated");
    assert_eq!(
        last["message_id"],
        sent[0].causation_id.unwrap().to_string()
    );
}

#[tokio::test]
async fn an_authorization_after_the_payment_expired_is_refunded_once() {
    let env = env().await;
    let (app, bus, order_id) = awaiting_payment(&env).await;
    bus.step().await;
    let late = PaymentAuthorized {
        order_id,
        amount: usd(3000),
    };

    bus.send(&late).await;
    bus.send(&late).await;
    let sent = bus.drain(QUIET).await;
    let saga = saga_of(&app, order_id).await;

    assert_eq!(kinds(&sent), [RefundPayment::NAME, SagaTransitioned::NAME]);
    let refund: RefundPayment = payload(&sent[0]);
    assert_eq!(refund.order_id, order_id);
    assert_eq!(saga["state"], "Cancelled");
    assert_eq!(saga["refund_issued"], true);
    let history = saga["history"].as_array().unwrap();
    assert_eq!(
        history.last().unwrap()["ignored"],
        "late payment already refunded"
    );
}

#[tokio::test]
async fn a_pending_deadline_still_fires_after_the_service_restarts_on_the_same_database() {
    let env = env().await;
    let (app, bus, order_id) = awaiting_payment(&env).await;

    app.shutdown().await.unwrap();
    let mut s = settings(&env);
    s.timeouts.payment_ms = SHORT_PAYMENT_MS;
    let restarted = env.spawn(lab_checkout::build, s).await;
    let sent = bus.step().await;
    let saga = saga_of(&restarted, order_id).await;

    assert_eq!(
        kinds(&sent),
        [
            ReleaseStock::NAME,
            VoidPayment::NAME,
            SagaTransitioned::NAME
        ]
    );
    assert_eq!(saga["state"], "Cancelled");
}

#[tokio::test]
async fn two_replicas_fire_a_deadline_once() {
    let env = env().await;
    let (_first, bus, order_id) = awaiting_payment(&env).await;
    let mut s = settings(&env);
    s.http = env.http(2);
    s.timeouts.payment_ms = SHORT_PAYMENT_MS;
    let second = env.spawn(lab_checkout::build, s).await;

    let mut sent = bus.step().await;
    sent.extend(bus.drain(QUIET).await);
    let saga = saga_of(&second, order_id).await;

    assert_eq!(
        kinds(&sent),
        [
            ReleaseStock::NAME,
            VoidPayment::NAME,
            SagaTransitioned::NAME
        ]
    );
    let timeouts = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["event"] == "Timeout")
        .count();
    assert_eq!(timeouts, 1);
}
