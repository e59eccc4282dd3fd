//! The admin routes: the outbox (status, pause, resume) and dead letters (list, replay), behind
//! the administrator's bearer token.

use lab_contracts::{Message, VoidPayment};
use lab_messaging::Envelope;
use lab_test_support::eventually;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{ADMIN, DEADLINE, Harness};

async fn admin(
    h: &Harness,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = h.app.client.request(method, h.app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn every_admin_route_refuses_a_missing_or_wrong_token() {
    let h = Harness::start().await;
    let routes = [
        (reqwest::Method::GET, "/admin/outbox"),
        (reqwest::Method::POST, "/admin/outbox/pause"),
        (reqwest::Method::POST, "/admin/outbox/resume"),
        (reqwest::Method::GET, "/admin/dead-letters"),
        (reqwest::Method::POST, "/admin/dead-letters/1/replay"),
    ];

    for (method, path) in routes {
        let (none, problem) = admin(&h, method.clone(), path, None).await;
        let (wrong, _) = admin(&h, method, path, Some("guess")).await;

        assert_eq!((none, wrong), (401, 401), "{path}");
        assert_eq!(problem["status"], 401);
    }
}

#[tokio::test]
async fn a_paused_outbox_grows_and_drains_once_resumed() {
    let h = Harness::start().await;
    let (status, paused) = admin(
        &h,
        reqwest::Method::POST,
        "/admin/outbox/pause",
        Some(ADMIN),
    )
    .await;
    assert_eq!((status, &paused["paused"]), (200, &json!(true)));

    h.bus
        .send(&VoidPayment {
            order_id: Uuid::now_v7(),
        })
        .await;
    let grown = eventually(DEADLINE, || async {
        let (_, outbox) = admin(&h, reqwest::Method::GET, "/admin/outbox", Some(ADMIN)).await;
        (outbox["pending"] == 1).then_some(outbox)
    })
    .await
    .expect("the outbox never held the event");
    assert_eq!(grown["paused"], true);
    assert!(
        h.bus
            .next_within(std::time::Duration::from_millis(500))
            .await
            .is_none()
    );

    admin(
        &h,
        reqwest::Method::POST,
        "/admin/outbox/resume",
        Some(ADMIN),
    )
    .await;

    h.bus.until("payments.voided").await;
    // The relay marks the row sent after the broker's confirm, which can come after the
    // delivery the bus just saw.
    let drained = eventually(DEADLINE, || async {
        let (_, outbox) = admin(&h, reqwest::Method::GET, "/admin/outbox", Some(ADMIN)).await;
        (outbox["pending"] == 0).then_some(outbox)
    })
    .await
    .expect("the outbox never drained");
    assert_eq!(drained["paused"], false);
}

#[tokio::test]
async fn a_dead_letter_is_listed_and_can_be_replayed() {
    // No retry queues: a message that fails once is dead.
    let h = Harness::start_with(|mut s| {
        s.amqp.retry_delays_ms = vec![];
        s
    })
    .await;
    let broken = Envelope::new(VoidPayment::NAME, json!({"not": "a void"}));
    h.bus.publish(&broken).await;

    let listed = eventually(DEADLINE, || async {
        let (_, letters) =
            admin(&h, reqwest::Method::GET, "/admin/dead-letters", Some(ADMIN)).await;
        letters.as_array().filter(|l| !l.is_empty()).cloned()
    })
    .await
    .expect("the message was never dead-lettered");
    assert_eq!(listed[0]["message_id"], broken.message_id.to_string());
    let id = listed[0]["id"].as_i64().unwrap();

    let (status, replayed) = admin(
        &h,
        reqwest::Method::POST,
        &format!("/admin/dead-letters/{id}/replay"),
        Some(ADMIN),
    )
    .await;

    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replay_count"], 1);
    let (missing, _) = admin(
        &h,
        reqwest::Method::POST,
        "/admin/dead-letters/999999/replay",
        Some(ADMIN),
    )
    .await;
    assert_eq!(missing, 404);
}
