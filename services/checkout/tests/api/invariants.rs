//! `GET /invariants`: a saga waiting on a deadline that has not passed is in flight, not stuck;
//! one that waits on nothing, or whose deadline passed long ago, is reported by its order id.

use lab_checkout::TimeoutSettings;
use lab_test_support::TestApp;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{Bus, env, order, settings};

async fn pool(app: &TestApp) -> PgPool {
    lab_db::connect(
        &app.env.database("checkout"),
        "checkout",
        "invariants-test",
        "-",
    )
    .await
    .unwrap()
}

async fn invariants(app: &TestApp) -> Value {
    let (status, body) = app.get_json("/invariants").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Checkout with a poller that never comes round (so a backdated deadline stays unfired, as when
/// every orchestrator is down), and one saga started: `(app, order id)`.
async fn one_saga_waiting() -> (TestApp, Uuid) {
    let env = env().await;
    let mut s = settings(&env);
    s.deadline_poll_ms = 3_600_000;
    let app = env.spawn(lab_checkout::build, s).await;
    let bus = Bus::connect(&env).await;
    let order_id = Uuid::now_v7();
    bus.send(&order(order_id)).await;
    bus.step().await;
    (app, order_id)
}

#[tokio::test]
async fn a_saga_waiting_on_a_future_deadline_is_in_flight_not_stuck() {
    let (app, _) = one_saga_waiting().await;

    let body = invariants(&app).await;

    assert_eq!(body["held"], true, "{body}");
    assert_eq!(body["by_state"], json!({"Initiated": 1}), "{body}");
    assert_eq!(body["no_stuck_sagas"]["in_flight"], 1, "{body}");
    assert_eq!(body["no_stuck_sagas"]["order_ids"], json!([]), "{body}");
    let (_, doc) = app.get_json("/openapi.json").await;
    assert!(doc["paths"]["/invariants"]["get"].is_object(), "{doc}");
    // 1 + 1 + 15 + 1 min, and the commit's 1 min four times: 22 min.
    let defaults = TimeoutSettings::default();
    assert_eq!(
        body["longest_saga_ms"],
        defaults.reserve_ms
            + defaults.session_ms
            + defaults.payment_ms
            + defaults.capture_ms
            + 4 * defaults.commit_ms,
        "{body}"
    );
}

#[tokio::test]
async fn a_saga_whose_deadline_passed_beyond_the_grace_is_stuck() {
    let (app, order_id) = one_saga_waiting().await;

    sqlx::query("UPDATE saga_deadlines SET due_at = now() - interval '1 hour'")
        .execute(&pool(&app).await)
        .await
        .unwrap();
    let body = invariants(&app).await;

    assert_eq!(body["held"], false, "{body}");
    let stuck = &body["no_stuck_sagas"];
    assert_eq!(stuck["held"], false, "{body}");
    assert_eq!(stuck["deadline_overdue"], 1, "{body}");
    assert_eq!(stuck["without_deadline"], 0, "{body}");
    assert_eq!(stuck["order_ids"], json!([order_id.to_string()]), "{body}");
}

#[tokio::test]
async fn a_saga_waiting_on_no_deadline_is_stuck() {
    let (app, order_id) = one_saga_waiting().await;

    sqlx::query("DELETE FROM saga_deadlines")
        .execute(&pool(&app).await)
        .await
        .unwrap();
    let body = invariants(&app).await;

    let stuck = &body["no_stuck_sagas"];
    assert_eq!(stuck["held"], false, "{body}");
    assert_eq!(stuck["without_deadline"], 1, "{body}");
    assert_eq!(stuck["order_ids"], json!([order_id.to_string()]), "{body}");
}
