//! Following the checkout saga: every `SagaTransitioned` is recorded once, a terminal one sets
//! the order's final status, and nothing late or repeated moves a finished order back.

use lab_contracts::{Message, SagaTransitioned};
use lab_messaging::Envelope;
use lab_test_support::TestApp;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{DEADLINE, get_order, line, place, shop, tap};

fn transition(
    order_id: Uuid,
    from: &str,
    to: &str,
    event: &str,
    compensations: &[&str],
) -> Envelope {
    let payload = SagaTransitioned {
        order_id,
        from: from.into(),
        to: to.into(),
        event: event.into(),
        terminal: matches!(
            to,
            "Completed" | "Rejected" | "Cancelled" | "RequiresReview"
        ),
        compensations: compensations.iter().map(|c| (*c).to_owned()).collect(),
    };
    Envelope::new(
        SagaTransitioned::NAME,
        serde_json::to_value(payload).unwrap(),
    )
}

/// Places an order as `customer` and returns its id.
async fn placed(app: &TestApp, customer: &str) -> Uuid {
    let body = json!({"lines": [line("LAB-STICKERS", 3)], "provider": "paypal"});
    let (status, _, body) = place(app, Some("saga-key"), Some(customer), &body).await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().parse().unwrap()
}

/// Polls the order until `accept` holds for it; panics with the last body seen after
/// [`DEADLINE`].
async fn order_when(
    app: &TestApp,
    id: Uuid,
    customer: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let last = std::sync::Mutex::new(Value::Null);
    let found = lab_test_support::eventually(DEADLINE, || async {
        let (_, order) = get_order(app, &id.to_string(), customer).await;
        if accept(&order) {
            Some(order)
        } else {
            *last.lock().unwrap() = order;
            None
        }
    })
    .await;
    found.unwrap_or_else(|| {
        panic!(
            "order {id} never matched within {DEADLINE:?}; last: {:#}",
            last.lock().unwrap()
        )
    })
}

#[tokio::test]
async fn a_completed_saga_completes_the_order_with_its_whole_history() {
    let shop = shop().await;
    let bus = tap(&shop.orders).await;
    let id = placed(&shop.orders, "frank").await;
    let steps = [
        ("Initiated", "StockReserved", "StockReserved"),
        (
            "StockReserved",
            "PaymentSessionCreated",
            "PaymentSessionCreated",
        ),
        (
            "PaymentSessionCreated",
            "PaymentAuthorized",
            "PaymentAuthorized",
        ),
        ("PaymentAuthorized", "Captured", "PaymentCaptured"),
        ("Captured", "Completed", "StockCommitted"),
    ];

    for (from, to, event) in steps {
        bus.publish(&transition(id, from, to, event, &[])).await;
    }
    let order = order_when(&shop.orders, id, "frank", |o| {
        o["history"].as_array().is_some_and(|h| h.len() == 5)
    })
    .await;

    assert_eq!(order["status"], "Completed");
    assert_eq!(order["saga_state"], "Completed");
    assert_eq!(order["outcome"]["status"], "Completed");
    assert_eq!(order["outcome"]["compensations"], json!([]));
    let path: Vec<&str> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to"].as_str().unwrap())
        .collect();
    assert_eq!(
        path,
        [
            "StockReserved",
            "PaymentSessionCreated",
            "PaymentAuthorized",
            "Captured",
            "Completed"
        ]
    );
}

#[tokio::test]
async fn a_cancelled_order_lists_its_compensations_and_late_or_repeated_events_change_nothing() {
    let shop = shop().await;
    let bus = tap(&shop.orders).await;
    let id = placed(&shop.orders, "grace").await;
    let reserved = transition(id, "Initiated", "StockReserved", "StockReserved", &[]);
    let cancelled = transition(
        id,
        "StockReserved",
        "Cancelled",
        "PaymentSessionFailed",
        &["ReleaseStock", "VoidPayment"],
    );
    let late_refund = transition(
        id,
        "Cancelled",
        "Cancelled",
        "PaymentAuthorized",
        &["RefundPayment"],
    );
    let late_step = transition(
        id,
        "PaymentSessionCreated",
        "PaymentAuthorized",
        "PaymentAuthorized",
        &[],
    );

    bus.publish(&reserved).await;
    bus.publish(&cancelled).await;
    bus.publish(&cancelled).await;
    bus.publish(&late_refund).await;
    bus.publish(&late_step).await;
    let order = order_when(&shop.orders, id, "grace", |o| {
        o["history"].as_array().is_some_and(|h| h.len() == 4)
    })
    .await;

    assert_eq!(
        order["status"], "Cancelled",
        "a late step did not move it back"
    );
    assert_eq!(order["outcome"]["status"], "Cancelled");
    assert_eq!(
        order["outcome"]["compensations"],
        json!(["ReleaseStock", "VoidPayment", "RefundPayment"])
    );
    let messages: std::collections::BTreeSet<String> = order["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["message_id"].to_string())
        .collect();
    assert_eq!(
        messages.len(),
        4,
        "the duplicate delivery was recorded once"
    );
}

#[tokio::test]
async fn each_terminal_saga_state_is_the_orders_final_status() {
    let shop = shop().await;
    let bus = tap(&shop.orders).await;
    let mut ids = Vec::new();
    for (i, to) in ["Rejected", "RequiresReview"].into_iter().enumerate() {
        let body = json!({"lines": [line("LAB-MUG", 1)], "provider": "stripe"});
        let (_, _, placed) =
            place(&shop.orders, Some(&format!("k{i}")), Some("heidi"), &body).await;
        let id: Uuid = placed["order_id"].as_str().unwrap().parse().unwrap();
        bus.publish(&transition(id, "Initiated", to, "Whatever", &[]))
            .await;
        ids.push((id, to));
    }

    for (id, to) in ids {
        let order = order_when(&shop.orders, id, "heidi", |o| o["status"] != "Pending").await;
        assert_eq!(order["status"], to);
        assert!(order["outcome"]["decided_at"].is_string());
    }
}
