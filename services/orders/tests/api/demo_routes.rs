//! Who may use orders' admin routes and their bounded demo variants: an administrator's token
//! both, the BFF's `demo`-scoped client token only the demo ones (a timed outbox pause, capped),
//! a customer's token neither.

use lab_test_support::TestApp;
use lab_test_support::identity::{ADMIN_EMAIL, client_token, signed_in};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{line, signed_in_shop};

/// `method path` on `app` as `token` (none: anonymous), with `body` when there is one.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A body-less `POST path` as `token`.
async fn post(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    call(app, Method::POST, path, Some(token), None).await
}

/// `GET path` as `token`.
async fn get(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    call(app, Method::GET, path, Some(token), None).await
}

/// `POST /demo/outbox/pause` for `for_s` seconds as `token` (none: anonymous).
async fn demo_pause(app: &TestApp, token: Option<&str>, for_s: u32) -> (u16, Value) {
    let body = json!({ "for_s": for_s });
    call(app, Method::POST, "/demo/outbox/pause", token, Some(body)).await
}

#[tokio::test]
async fn the_demo_token_may_pause_the_outbox_for_a_bounded_time_and_nothing_more() {
    lab_test_support::require_bao!();
    let shop = signed_in_shop().await;
    let orders = &shop.orders;
    let demo = client_token(&shop.identity).await;
    let (customer, _) = signed_in(&shop.identity, "someone@example.com").await;

    let (paused, view) = demo_pause(orders, Some(&demo), 5).await;
    let (too_long, problem) = demo_pause(orders, Some(&demo), 31).await;
    let (resumed, after) = post(orders, "/demo/outbox/resume", &demo).await;
    let (admin_route, _) = post(orders, "/admin/outbox/pause", &demo).await;
    let (rotate_route, _) = post(orders, "/admin/credentials/rotate", &demo).await;
    let (by_customer, _) = demo_pause(orders, Some(&customer), 5).await;
    let (anonymous, _) = demo_pause(orders, None, 5).await;

    assert_eq!(paused, 200, "{view}");
    assert_eq!(view["paused"], true);
    assert_eq!(too_long, 422, "{problem}");
    assert_eq!(problem["field"], "for_s");
    assert_eq!(resumed, 200, "{after}");
    assert_eq!(after["paused"], false);
    assert_eq!(admin_route, 403, "the demo token is no administrator");
    assert_eq!(rotate_route, 403, "the demo token is no administrator");
    assert_eq!(by_customer, 403, "a user's token has no demo scope");
    assert_eq!(anonymous, 401);
}

#[tokio::test]
async fn a_demo_pause_lifts_itself_and_never_touches_the_operators_pause() {
    lab_test_support::require_bao!();
    let shop = signed_in_shop().await;
    let orders = &shop.orders;
    let demo = client_token(&shop.identity).await;
    let (admin, _) = signed_in(&shop.identity, ADMIN_EMAIL).await;

    let (_, short) = demo_pause(orders, Some(&demo), 1).await;
    // The database clock ends the pause, so real time has to pass.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let (_, lifted) = get(orders, "/demo/outbox", &demo).await;
    let (operator, _) = post(orders, "/admin/outbox/pause", &admin).await;
    let (refused, _) = demo_pause(orders, Some(&demo), 5).await;
    let (_, still) = post(orders, "/demo/outbox/resume", &demo).await;
    let (_, admin_view) = get(orders, "/admin/outbox", &admin).await;
    post(orders, "/admin/outbox/resume", &admin).await;

    assert_eq!(short["paused"], true);
    assert_eq!(
        lifted["paused"], false,
        "the pause ended by itself: {lifted}"
    );
    assert_eq!(operator, 200);
    assert_eq!(refused, 409, "a demo cannot shorten the operator's pause");
    assert_eq!(
        still["paused"], true,
        "a demo cannot lift the operator's pause"
    );
    assert_eq!(admin_view["paused"], true);
}

#[tokio::test]
async fn only_the_demo_token_may_ask_for_a_short_payment_window_and_only_within_bounds() {
    lab_test_support::require_bao!();
    let shop = signed_in_shop().await;
    let demo = client_token(&shop.identity).await;
    let (customer, _) = signed_in(&shop.identity, "someone@example.com").await;
    let order = |window: u32| json!({ "lines": [line("LAB-MUG", 1)], "provider": "stripe", "payment_window_s": window });
    let place = |token: Option<String>, body: Value| {
        let request = shop
            .orders
            .client
            .post(shop.orders.url("/orders"))
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .header("x-lab-customer", "demo:window-test")
            .json(&body);
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };

    let (by_demo, placed) = place(Some(demo.clone()), order(5)).await;
    let (too_long, problem) = place(Some(demo), order(31)).await;
    let (by_visitor, _) = place(None, order(5)).await;
    let (by_customer, _) = place(Some(customer), order(5)).await;

    assert_eq!(by_demo, 202, "{placed}");
    assert_eq!(too_long, 422, "{problem}");
    assert_eq!(problem["field"], "payment_window_s");
    assert_eq!(by_visitor, 403);
    assert_eq!(by_customer, 403);
}
