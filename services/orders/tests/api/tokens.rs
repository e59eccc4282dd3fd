//! Identity's access tokens at orders (and, with the same token, at catalog): a signed-in user is
//! the customer `user:<sub>`, reads only their own orders (an administrator reads any), and a
//! token that does not verify is 401, never the anonymous session.

use std::time::Duration;

use lab_test_support::identity::{ADMIN_EMAIL, logout, signed_in};
use lab_test_support::{TestApp, eventually};
use serde_json::{Value, json};

use crate::helpers::{get_order, line, place, signed_in_shop};

fn cart() -> Value {
    json!({"lines": [line("LAB-MUG", 1)], "provider": "stripe"})
}

/// `method path` with a bearer `token` (and optional `X-Lab-Customer`, `Idempotency-Key`, JSON
/// body) → (status, body).
async fn with_token(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    customer: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(customer) = customer {
        request = request.header("x-lab-customer", customer);
    }
    if let Some(body) = body {
        request = request
            .header("idempotency-key", uuid::Uuid::now_v7().to_string())
            .json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Places [`cart`] as the holder of `token`; panics unless 202. Returns the order id.
async fn place_as(orders: &TestApp, token: &str) -> String {
    let (status, body) = with_token(
        orders,
        reqwest::Method::POST,
        "/orders",
        token,
        None,
        Some(&cart()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().unwrap().to_owned()
}

async fn read_as(orders: &TestApp, id: &str, token: &str) -> (u16, Value) {
    with_token(
        orders,
        reqwest::Method::GET,
        &format!("/orders/{id}"),
        token,
        None,
        None,
    )
    .await
}

#[tokio::test]
async fn a_signed_in_user_places_an_order_and_reads_it_as_user_sub() {
    let shop = signed_in_shop().await;
    let (token, pair) = signed_in(&shop.identity, "buyer@example.com").await;
    let me = shop
        .identity
        .client
        .get(shop.identity.url("/me"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();

    let id = place_as(&shop.orders, &token).await;
    let (status, order) = read_as(&shop.orders, &id, &token).await;
    // A visitor's session may not pose as the user to read it.
    let (posing, _) = get_order(
        &shop.orders,
        &id,
        &format!("user:{}", me["id"].as_str().unwrap_or_default()),
    )
    .await;

    assert!(pair["access_token"].is_string());
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["order_id"], id.as_str());
    assert_eq!(posing, 400);
}

#[tokio::test]
async fn another_users_token_gets_404_and_an_administrators_token_reads_the_order() {
    let shop = signed_in_shop().await;
    let (owner, _) = signed_in(&shop.identity, "owner@example.com").await;
    let (stranger, _) = signed_in(&shop.identity, "stranger@example.com").await;
    let (admin, _) = signed_in(&shop.identity, ADMIN_EMAIL).await;
    let id = place_as(&shop.orders, &owner).await;

    let (strangers, problem) = read_as(&shop.orders, &id, &stranger).await;
    let (admins, order) = read_as(&shop.orders, &id, &admin).await;
    let (visitors, _) = get_order(&shop.orders, &id, "some-session").await;

    assert_eq!(strangers, 404, "{problem}");
    assert_eq!(admins, 200, "{order}");
    assert_eq!(visitors, 404);
}

#[tokio::test]
async fn an_invalid_token_is_401_even_beside_a_visitor_session() {
    let shop = signed_in_shop().await;
    let (_, _, placed) = place(&shop.orders, Some("k"), Some("visitor-1"), &cart()).await;
    let id = placed["order_id"].as_str().unwrap();

    let (placing, problem) = with_token(
        &shop.orders,
        reqwest::Method::POST,
        "/orders",
        "not-a-token",
        Some("visitor-1"),
        Some(&cart()),
    )
    .await;
    let (reading, _) = with_token(
        &shop.orders,
        reqwest::Method::GET,
        &format!("/orders/{id}"),
        "not-a-token",
        Some("visitor-1"),
        None,
    )
    .await;

    assert_eq!(placing, 401, "{problem}");
    assert_eq!(problem["type"], "urn:lab:problem:unauthenticated");
    assert_eq!(reading, 401);
}

#[tokio::test]
async fn a_visitor_session_still_places_and_reads_its_order_beside_identity() {
    let shop = signed_in_shop().await;

    let (status, _, placed) = place(&shop.orders, Some("k"), Some("visitor-2"), &cart()).await;
    let (read, order) = get_order(
        &shop.orders,
        placed["order_id"].as_str().unwrap_or_default(),
        "visitor-2",
    )
    .await;

    assert_eq!(status, 202, "{placed}");
    assert_eq!(read, 200, "{order}");
}

#[tokio::test]
async fn after_logout_catalog_and_orders_refuse_the_token_within_a_second() {
    let shop = signed_in_shop().await;
    let (token, _) = signed_in(&shop.identity, ADMIN_EMAIL).await;
    let (created, product) = with_token(
        &shop.catalog,
        reqwest::Method::POST,
        "/products",
        &token,
        None,
        Some(
            &json!({"sku": "TOKEN-1", "name": "By token", "price_minor": 250,
                     "currency": "USD", "initial_stock": 3}),
        ),
    )
    .await;
    let id = place_as(&shop.orders, &token).await;
    let (read, _) = read_as(&shop.orders, &id, &token).await;

    logout(&shop.identity, &token).await;
    let refused = eventually(Duration::from_secs(1), || async {
        let (orders, orders_body) = read_as(&shop.orders, &id, &token).await;
        // The administrator's probe: past the role check an unconditional DELETE is 428.
        let (catalog, catalog_body) = with_token(
            &shop.catalog,
            reqwest::Method::DELETE,
            &format!("/products/{}", uuid::Uuid::now_v7()),
            &token,
            None,
            None,
        )
        .await;
        (orders == 401 && catalog == 401).then_some((orders_body, catalog_body))
    })
    .await;

    assert_eq!(created, 201, "{product}");
    assert_eq!(read, 200);
    let (orders_body, catalog_body) =
        refused.expect("a service still accepted the token after 1 s");
    assert_eq!(orders_body["detail"], "the token has been revoked");
    assert_eq!(catalog_body["detail"], "the token has been revoked");
}
