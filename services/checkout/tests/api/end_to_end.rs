//! Every scenario of the place-order saga end to end: orders over HTTP, checkout orchestrating,
//! catalog reserving, payments opening sessions at the sandbox PSP, the PSP's signed webhooks
//! coming back. Each test checks the order's final state and the side effects that must follow
//! it: stock sold or returned, money captured, voided or refunded.

use lab_psp::{Auto, Scenario};
use serde_json::{Value, json};

use lab_test_cluster::{Cluster, Options, line};

fn with(scenario: Scenario) -> Options {
    Options {
        scenario,
        ..Options::default()
    }
}

fn approving(scenario: Scenario) -> Options {
    with(Scenario {
        auto: Auto::Approve,
        ..scenario
    })
}

fn units(inventory: &Value, field: &str) -> i64 {
    inventory[field].as_i64().unwrap()
}

#[tokio::test]
async fn a_paid_order_completes_with_its_stock_sold_and_its_payment_captured() {
    let cluster = Cluster::start(Options::default()).await;
    let before = cluster.inventory("LAB-MUG").await;

    let id = cluster.place(json!([line("LAB-MUG", 2)]), "stripe").await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Completed", "{order:#}");
    let after = cluster
        .inventory_reaches("LAB-MUG", |i| {
            units(i, "sold") == units(&before, "sold") + 2
        })
        .await;
    assert_eq!(units(&after, "reserved"), units(&before, "reserved"));
    assert_eq!(units(&after, "on_hand"), units(&before, "on_hand") - 2);
    let payment = cluster.payment_reaches(&id, "captured").await;
    assert_eq!(payment["captured_minor"], 2 * 1_400);
    assert_eq!(cluster.saga(&id).await["state"], "Completed");
}

#[tokio::test]
async fn a_paypal_order_completes_through_rsa_signed_webhooks() {
    let cluster = Cluster::start(Options::default()).await;

    let id = cluster.place(json!([line("LAB-TEE", 1)]), "paypal").await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Completed", "{order:#}");
    let payment = cluster.payment_reaches(&id, "captured").await;
    assert!(payment["capture_id"].is_string(), "{payment:#}");
}

#[tokio::test]
async fn an_order_for_more_than_the_stock_is_rejected_and_no_payment_is_opened() {
    let cluster = Cluster::start(Options::default()).await;

    let id = cluster
        .place(json!([line("DEMO-LAST-UNIT", 2)]), "stripe")
        .await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Rejected", "{order:#}");
    let (status, _) = cluster
        .payments()
        .get_json(&format!("/payments/{id}"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        units(&cluster.inventory("DEMO-LAST-UNIT").await, "on_hand"),
        1
    );
}

#[tokio::test]
async fn a_declined_payment_cancels_the_order_and_returns_the_stock() {
    let cluster = Cluster::start(with(Scenario {
        auto: Auto::Decline,
        ..Scenario::default()
    }))
    .await;
    let before = cluster.inventory("LAB-HOODIE").await;

    let id = cluster
        .place(json!([line("LAB-HOODIE", 3)]), "stripe")
        .await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Cancelled", "{order:#}");
    cluster
        .inventory_reaches("LAB-HOODIE", |i| {
            units(i, "on_hand") == units(&before, "on_hand") && units(i, "reserved") == 0
        })
        .await;
    let payment = cluster.payment(&id).await;
    assert_eq!(payment["state"], "declined", "{payment:#}");
    assert!(payment["captured_minor"].is_null());
}

#[tokio::test]
async fn a_payment_window_that_closes_unpaid_cancels_the_order_and_expires_the_session() {
    let cluster = Cluster::start(Options {
        // The buyer never acts; the customer's window is two seconds.
        scenario: Scenario::default(),
        timeouts: lab_checkout::TimeoutSettings {
            payment_ms: 2_000,
            ..lab_checkout::TimeoutSettings::default()
        },
        ..Options::default()
    })
    .await;
    let before = cluster.inventory("LAB-NOTEBOOK").await;

    let id = cluster
        .place(json!([line("LAB-NOTEBOOK", 1)]), "stripe")
        .await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Cancelled", "{order:#}");
    cluster
        .inventory_reaches("LAB-NOTEBOOK", |i| {
            units(i, "on_hand") == units(&before, "on_hand") && units(i, "reserved") == 0
        })
        .await;
    // The void is a compensation sent with the final step: it may land just after.
    let settled = lab_test_support::eventually(lab_test_cluster::SAGA_DEADLINE, || async {
        let payment = cluster.payment(&id).await;
        let state = payment["state"].as_str().unwrap_or_default().to_owned();
        ["voided", "expired", "declined"]
            .contains(&state.as_str())
            .then_some(payment)
    })
    .await;
    assert!(settled.is_some(), "{:#}", cluster.payment(&id).await);
}

#[tokio::test]
async fn a_refused_capture_cancels_the_order_voids_the_authorization_and_returns_the_stock() {
    let cluster = Cluster::start(approving(Scenario {
        fail_capture: true,
        ..Scenario::default()
    }))
    .await;
    let before = cluster.inventory("LAB-STICKERS").await;

    let id = cluster
        .place(json!([line("LAB-STICKERS", 4)]), "paypal")
        .await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Cancelled", "{order:#}");
    cluster
        .inventory_reaches("LAB-STICKERS", |i| {
            units(i, "on_hand") == units(&before, "on_hand") && units(i, "reserved") == 0
        })
        .await;
    let payment = cluster.payment_reaches(&id, "voided").await;
    assert!(payment["captured_minor"].is_null(), "{payment:#}");
}

#[tokio::test]
async fn an_authorization_for_the_wrong_amount_sends_the_order_to_review_and_gives_the_money_back()
{
    let cluster = Cluster::start(approving(Scenario {
        authorize_amount_delta_minor: -100,
        ..Scenario::default()
    }))
    .await;
    let before = cluster.inventory("LAB-MUG").await;

    let id = cluster.place(json!([line("LAB-MUG", 1)]), "stripe").await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "RequiresReview", "{order:#}");
    assert_eq!(cluster.saga(&id).await["refund_issued"], true);
    // Only authorized, never captured: giving the money back is a void.
    let payment = cluster.payment_reaches(&id, "voided").await;
    assert_eq!(payment["authorized_minor"], 1_400 - 100);
    assert!(payment["captured_minor"].is_null(), "{payment:#}");
    cluster
        .inventory_reaches("LAB-MUG", |i| {
            units(i, "on_hand") == units(&before, "on_hand") && units(i, "reserved") == 0
        })
        .await;
}

#[tokio::test]
async fn duplicated_reordered_and_missigned_webhooks_still_complete_the_order_once() {
    let cluster = Cluster::start(approving(Scenario {
        duplicate_webhooks: true,
        out_of_order: true,
        corrupt_signature_first_attempt: true,
        ..Scenario::default()
    }))
    .await;
    let before = cluster.inventory("LAB-TEE").await;

    let id = cluster.place(json!([line("LAB-TEE", 2)]), "stripe").await;
    let order = cluster.finished(&id).await;

    assert_eq!(order["status"], "Completed", "{order:#}");
    let payment = cluster.payment_reaches(&id, "captured").await;
    assert_eq!(payment["captured_minor"], 2 * 2_500);
    let after = cluster
        .inventory_reaches("LAB-TEE", |i| {
            units(i, "sold") == units(&before, "sold") + 2
        })
        .await;
    assert_eq!(units(&after, "reserved"), 0);
    // Each saga event reached checkout once: payments emitted nothing twice, so no step was
    // ignored as a duplicate.
    let saga = cluster.saga(&id).await;
    let ignored: Vec<&Value> = saga["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| !t["ignored"].is_null())
        .collect();
    assert!(ignored.is_empty(), "{saga:#}");
}

#[tokio::test]
async fn two_carts_racing_for_the_last_unit_end_one_completed_and_one_rejected() {
    let cluster = Cluster::start(Options::default()).await;

    let (a, b) = tokio::join!(
        cluster.place(json!([line("DEMO-LAST-UNIT", 1)]), "stripe"),
        cluster.place(json!([line("DEMO-LAST-UNIT", 1)]), "paypal"),
    );
    let (a, b) = tokio::join!(cluster.finished(&a), cluster.finished(&b));

    let mut outcomes = vec![
        a["status"].as_str().unwrap().to_owned(),
        b["status"].as_str().unwrap().to_owned(),
    ];
    outcomes.sort();
    assert_eq!(outcomes, ["Completed", "Rejected"]);
    let last = cluster
        .inventory_reaches("DEMO-LAST-UNIT", |i| units(i, "sold") == 1)
        .await;
    assert_eq!(units(&last, "on_hand"), 0);
    assert_eq!(units(&last, "reserved"), 0);
}
