//! `GET /payments/{order_id}`: the payment with its provider ids, state, amounts and history.

use uuid::Uuid;

use crate::helpers::Harness;

#[tokio::test]
async fn a_payment_shows_its_provider_ids_state_amount_and_history() {
    let h = Harness::start().await;
    let order = Uuid::now_v7();
    h.open_session(order, "stripe", 1234).await;

    let (status, payment) = h.payment(order).await;

    assert_eq!(status, 200);
    assert_eq!(payment["provider"], "stripe");
    assert_eq!(payment["state"], "session_created");
    assert_eq!(payment["amount_minor"], 1234);
    assert_eq!(payment["currency"], "EUR");
    assert_eq!(payment["session_id"], format!("cs_test_{order}"));
    assert_eq!(payment["events"][0]["kind"], "CreatePaymentSession");
}

#[tokio::test]
async fn an_unknown_order_or_a_malformed_id_is_a_problem() {
    let h = Harness::start().await;

    let (unknown, _) = h.payment(Uuid::now_v7()).await;
    let malformed = h.app.get("/payments/not-a-uuid").await;

    assert_eq!(unknown, 404);
    assert_eq!(malformed.status(), 400);
}
