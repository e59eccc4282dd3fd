//! The saga views over HTTP: one saga, unknown ones, and the admin list with stuck sagas.

use lab_checkout::TimeoutSettings;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, Bus, env, order, settings};

#[tokio::test]
async fn an_unknown_saga_is_a_404_problem() {
    let app = crate::helpers::spawn_app().await;

    let response = app.get(&format!("/sagas/{}", Uuid::now_v7())).await;

    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], lab_http::PROBLEM_JSON);
}

#[tokio::test]
async fn the_admin_list_needs_the_admin_token() {
    let app = crate::helpers::spawn_app().await;

    let anonymous = app.get("/sagas").await;
    let wrong = app
        .client
        .get(app.url("/sagas"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status(), 401);
    assert_eq!(wrong.status(), 401);
}

#[tokio::test]
async fn the_admin_list_shows_sagas_by_state_and_which_are_stuck() {
    let env = env().await;
    let mut s = settings(&env);
    // A reservation deadline that is due at once and a poller that never comes round: the
    // saga is stuck, as when every orchestrator is down.
    s.timeouts = TimeoutSettings {
        reserve_ms: 1,
        ..TimeoutSettings::default()
    };
    s.deadline_poll_ms = 3_600_000;
    let app = env.spawn(lab_checkout::build, s).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    bus.send(&order(order_id)).await;
    bus.step().await;

    let get = |path: &'static str| {
        app.client
            .get(app.url(path))
            .bearer_auth(ADMIN_TOKEN)
            .send()
    };
    let initiated: serde_json::Value = get("/sagas?state=Initiated")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stuck: serde_json::Value = get("/sagas?stuck=true")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let completed: serde_json::Value = get("/sagas?state=Completed")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bad = get("/sagas?state=Nowhere").await.unwrap();

    assert_eq!(initiated[0]["order_id"], order_id.to_string());
    assert_eq!(stuck[0]["order_id"], order_id.to_string());
    assert_eq!(stuck[0]["stuck"], true);
    assert_eq!(stuck[0]["deadline"]["overdue"], true);
    assert_eq!(completed, serde_json::json!([]));
    assert_eq!(bad.status(), 422);
}
