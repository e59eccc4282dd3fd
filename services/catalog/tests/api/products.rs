//! Products: reads with ETags and cache levels, admin-only creation, validation as 422 naming the field.

use reqwest::Method;
use serde_json::json;

use crate::catalog::{demo_id, get, one, write};

#[tokio::test]
async fn the_seed_products_are_listed_paged_and_filtered_with_an_etag() {
    let app = one().await;

    let (status, etag, _, body) = get(&app, "/products?per_page=3").await;
    let (_, _, _, filtered) = get(&app, "/products?q=demo").await;

    assert_eq!(status, 200);
    assert!(etag.is_some());
    assert_eq!(body["items"].as_array().unwrap().len(), 3);
    assert_eq!(body["total"], 8);
    assert_eq!(filtered["total"], 3, "{filtered:#}");
}

#[tokio::test]
async fn a_product_read_carries_its_xmin_etag_and_says_which_cache_level_answered() {
    let app = one().await;
    let path = format!("/products/{}", demo_id("LAB-MUG"));

    let (status, etag, first, body) = get(&app, &path).await;
    let (_, etag_again, second, _) = get(&app, &path).await;

    assert_eq!(status, 200);
    assert_eq!(body["sku"], "LAB-MUG");
    assert_eq!(
        etag.as_deref(),
        Some(format!("\"x{}\"", body["xmin"].as_str().unwrap()).as_str())
    );
    assert_eq!(etag, etag_again);
    assert_eq!(first.as_deref(), Some("db"));
    assert_eq!(second.as_deref(), Some("l1"));
}

#[tokio::test]
async fn a_product_read_on_the_fast_path_gets_the_platform_headers_and_metrics_of_its_route() {
    let app = one().await;
    let path = format!("/products/{}", demo_id("LAB-MUG"));

    let plain = app.get(&path).await;
    let with_id = app
        .client
        .get(app.url(&path))
        .header("x-request-id", "caller-chosen-id")
        .send()
        .await
        .unwrap();
    let metrics = app.get("/metrics").await.text().await.unwrap();

    assert_eq!(plain.status(), 200);
    assert!(plain.headers().contains_key("x-request-id"));
    assert!(
        plain.headers()["x-instance-id"]
            .to_str()
            .unwrap()
            .starts_with("catalog-")
    );
    assert_eq!(plain.headers()["content-type"], "application/json");
    assert_eq!(with_id.headers()["x-request-id"], "caller-chosen-id");
    assert!(
        metrics
            .contains(r#"http_requests_total{method="GET",route="/products/{id}",status="200"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304() {
    let app = one().await;
    let path = format!("/products/{}", demo_id("LAB-MUG"));
    let (_, etag, _, _) = get(&app, &path).await;

    let r = app
        .client
        .get(app.url(&path))
        .header("if-none-match", etag.unwrap())
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 304);
}

#[tokio::test]
async fn an_unknown_product_is_404_and_a_malformed_id_400_both_as_problems() {
    let app = one().await;

    let (missing, _, _, body) = get(&app, "/products/00000000-0000-0000-0000-000000000000").await;
    let r = app.get("/products/not-a-uuid").await;

    assert_eq!(missing, 404);
    assert_eq!(body["status"], 404);
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn only_the_administrator_creates_products_and_a_sku_is_unique() {
    let app = one().await;
    let new = json!({"sku": "NEW-1", "name": "New", "price_minor": 100, "currency": "EUR", "initial_stock": 5});

    let (visitor, ..) = write(&app, Method::POST, "/products", None, false, new.clone()).await;
    let (created, etag, body, _) =
        write(&app, Method::POST, "/products", None, true, new.clone()).await;
    let (duplicate, _, dup_body, _) = write(&app, Method::POST, "/products", None, true, new).await;
    let (_, _, _, stock) = get(
        &app,
        &format!("/products/{}/inventory", body["id"].as_str().unwrap()),
    )
    .await;

    assert_eq!(visitor, 403);
    assert_eq!(created, 201);
    assert!(etag.is_some());
    assert_eq!(duplicate, 409, "{dup_body:#}");
    assert_eq!(stock["on_hand"], 5);
    assert_eq!(stock["received"], 5);
}

#[tokio::test]
async fn a_wrong_admin_token_is_401() {
    let app = one().await;

    let r = app
        .client
        .post(app.url("/products"))
        .bearer_auth("guess")
        .json(&json!({"sku": "X-1", "name": "x", "price_minor": 1, "currency": "USD"}))
        .send()
        .await
        .unwrap();

    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn invalid_fields_are_422_problems_naming_the_field() {
    let app = one().await;
    let base = json!({"sku": "OK-1", "name": "Fine", "price_minor": 100, "currency": "USD", "initial_stock": 1});
    let cases = [
        ("price_minor", json!(-1)),
        ("currency", json!("XYZ")),
        ("name", json!("x".repeat(121))),
        ("initial_stock", json!(-3)),
        ("sku", json!("lower case")),
    ];

    for (field, value) in cases {
        let mut body = base.clone();
        body[field] = value;
        let (status, _, problem, ctype) =
            write(&app, Method::POST, "/products", None, true, body).await;
        assert_eq!(status, 422, "{field}: {problem:#}");
        assert_eq!(ctype, "application/problem+json");
        assert_eq!(problem["field"], field);
    }
}

#[tokio::test]
async fn a_body_with_an_unknown_field_or_bad_json_never_reaches_the_database() {
    let app = one().await;

    let (unknown, ..) = write(
        &app,
        Method::POST,
        "/products",
        None,
        true,
        json!({"sku": "A-1", "name": "a", "price_minor": 1, "currency": "USD", "colour": "red"}),
    )
    .await;
    let r = app
        .client
        .post(app.url("/products"))
        .bearer_auth(crate::catalog::ADMIN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    let (_, _, _, list) = get(&app, "/products?q=A-1").await;

    assert_eq!(unknown, 422);
    assert_eq!(r.status(), 400);
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn deleting_needs_the_administrator_and_the_current_etag() {
    let app = one().await;
    let (_, etag, body, _) = write(
        &app,
        Method::POST,
        "/products",
        None,
        true,
        json!({"sku": "DEL-1", "name": "d", "price_minor": 1, "currency": "USD"}),
    )
    .await;
    let path = format!("/products/{}", body["id"].as_str().unwrap());

    let (as_visitor, ..) = write(
        &app,
        Method::DELETE,
        &path,
        etag.as_deref(),
        false,
        json!(null),
    )
    .await;
    let (without_etag, ..) = write(&app, Method::DELETE, &path, None, true, json!(null)).await;
    let (deleted, ..) = write(
        &app,
        Method::DELETE,
        &path,
        etag.as_deref(),
        true,
        json!(null),
    )
    .await;
    let (after, ..) = get(&app, &path).await;

    assert_eq!(as_visitor, 403);
    assert_eq!(without_etag, 428);
    assert_eq!(deleted, 204);
    assert_eq!(after, 404);
}
