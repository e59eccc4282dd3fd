//! Delivery retries: a receiver that fails is retried with backoff until it answers 2xx or the
//! attempts run out, and the attempt log says so.

use crate::helpers::{Psp, kinds};

#[tokio::test]
async fn a_receiver_answering_500_twice_gets_the_event_on_the_third_attempt() {
    let psp = Psp::start(&[500, 500]).await;
    let session = psp.stripe_session("500", "o", &[]).await;
    let id = session["id"].as_str().unwrap();

    psp.buyer(id, "decline").await;
    let hits = psp.receiver.wait_for(3).await;
    let attempts = psp.wait_attempts(id, 3).await;

    assert!(hits.iter().all(|h| h.id() == hits[0].id()));
    let outcomes: Vec<_> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].clone(),
                a["status"].clone(),
                a["outcome"].clone(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            (1.into(), 500.into(), "failed".into()),
            (2.into(), 500.into(), "failed".into()),
            (3.into(), 200.into(), "delivered".into())
        ]
    );
}

#[tokio::test]
async fn events_after_a_retried_one_wait_for_it_and_keep_their_order() {
    let psp = Psp::start(&[503]).await;
    let session = psp.stripe_session("500", "o", &[]).await;

    psp.buyer(session["id"].as_str().unwrap(), "approve").await;
    let hits = psp.receiver.wait_for(3).await;

    assert_eq!(
        kinds(&hits),
        [
            "checkout.session.completed",
            "checkout.session.completed",
            "payment_intent.amount_capturable_updated"
        ]
    );
}

#[tokio::test]
async fn the_sandbox_gives_up_after_max_attempts_and_logs_it() {
    let psp = Psp::start_with(&[500; 10], |s| s.webhooks.max_attempts = 3).await;
    let session = psp.stripe_session("500", "o", &[]).await;
    let id = session["id"].as_str().unwrap();

    psp.buyer(id, "decline").await;
    let attempts = psp.wait_attempts(id, 3).await;

    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2]["outcome"], "gave_up");
    assert_eq!(psp.receiver.hits().len(), 3);
}
