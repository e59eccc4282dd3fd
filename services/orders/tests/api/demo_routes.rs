//! Who may use orders' admin routes and their bounded demo variants: an administrator's token
//! both, the BFF's `demo`-scoped client token only the demo ones (a timed outbox pause, capped),
//! a customer's token neither.

use lab_test_support::TestApp;
use lab_test_support::identity::{ADMIN_EMAIL, client_token, signed_in};
use serde_json::{Value, json};

use crate::helpers::{line, signed_in_shop};

async fn call(
    app: &TestApp,
    method: reqwest::Method,
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

#[tokio::test]
async fn the_demo_token_may_pause_the_outbox_for_a_bounded_time_and_nothing_more() {
    lab_test_support::require_bao!();
    let shop = signed_in_shop().await;
    let demo = client_token(&shop.identity).await;
    let (customer, _) = signed_in(&shop.identity, "someone@example.com").await;
    let post = reqwest::Method::POST;

    let (paused, view) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/pause",
        Some(&demo),
        Some(json!({ "for_s": 5 })),
    )
    .await;
    let (too_long, problem) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/pause",
        Some(&demo),
        Some(json!({ "for_s": 31 })),
    )
    .await;
    let (resumed, after) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/resume",
        Some(&demo),
        None,
    )
    .await;
    let (admin_route, _) = call(
        &shop.orders,
        post.clone(),
        "/admin/outbox/pause",
        Some(&demo),
        None,
    )
    .await;
    let (rotate_route, _) = call(
        &shop.orders,
        post.clone(),
        "/admin/credentials/rotate",
        Some(&demo),
        None,
    )
    .await;
    let (by_customer, _) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/pause",
        Some(&customer),
        Some(json!({ "for_s": 5 })),
    )
    .await;
    let (anonymous, _) = call(
        &shop.orders,
        post,
        "/demo/outbox/pause",
        None,
        Some(json!({ "for_s": 5 })),
    )
    .await;

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
    let demo = client_token(&shop.identity).await;
    let (admin, _) = signed_in(&shop.identity, ADMIN_EMAIL).await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    let (_, short) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/pause",
        Some(&demo),
        Some(json!({ "for_s": 1 })),
    )
    .await;
    // The database clock ends the pause, so real time has to pass.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let (_, lifted) = call(&shop.orders, get.clone(), "/demo/outbox", Some(&demo), None).await;
    let (operator, _) = call(
        &shop.orders,
        post.clone(),
        "/admin/outbox/pause",
        Some(&admin),
        None,
    )
    .await;
    let (refused, _) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/pause",
        Some(&demo),
        Some(json!({ "for_s": 5 })),
    )
    .await;
    let (_, still) = call(
        &shop.orders,
        post.clone(),
        "/demo/outbox/resume",
        Some(&demo),
        None,
    )
    .await;
    let (_, admin_view) = call(&shop.orders, get, "/admin/outbox", Some(&admin), None).await;
    call(
        &shop.orders,
        post,
        "/admin/outbox/resume",
        Some(&admin),
        None,
    )
    .await;

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
