//! Optimistic concurrency on `xmin`: 428 without If-Match, 400 when malformed, 412 with the
//! current row when stale, and exactly one winner among concurrent writers.

use reqwest::Method;
use serde_json::json;

use crate::catalog::{demo_id, get, one, two, write};

#[tokio::test]
async fn a_write_without_if_match_gets_428() {
    let app = one().await;
    let path = format!("/products/{}", demo_id("DEMO-RACE"));

    let (status, _, body, ctype) = write(
        &app,
        Method::PATCH,
        &path,
        None,
        false,
        json!({"price_minor": 5}),
    )
    .await;

    assert_eq!(status, 428);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(body["status"], 428);
}

#[tokio::test]
async fn a_malformed_if_match_gets_400() {
    let app = one().await;
    let path = format!("/products/{}/inventory", demo_id("DEMO-RACE"));

    for tag in ["*", "\"abc\"", "x12", "W/\"x1\""] {
        let (status, ..) = write(
            &app,
            Method::PUT,
            &path,
            Some(tag),
            false,
            json!({"on_hand": 5}),
        )
        .await;
        assert_eq!(status, 400, "{tag}");
    }
}

#[tokio::test]
async fn a_stale_if_match_gets_412_and_the_current_row() {
    let app = one().await;
    let path = format!("/products/{}", demo_id("DEMO-RACE"));
    let (_, old_etag, _, _) = get(&app, &path).await;
    let (first, new_etag, updated, _) = write(
        &app,
        Method::PATCH,
        &path,
        old_etag.as_deref(),
        false,
        json!({"price_minor": 1234}),
    )
    .await;

    let (stale, header_etag, problem, ctype) = write(
        &app,
        Method::PATCH,
        &path,
        old_etag.as_deref(),
        false,
        json!({"price_minor": 999}),
    )
    .await;

    assert_eq!(first, 200);
    assert_eq!(updated["price_minor"], 1234);
    assert_eq!(stale, 412);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(problem["current"]["price_minor"], 1234);
    assert_eq!(problem["etag"].as_str(), new_etag.as_deref());
    assert_eq!(header_etag, new_etag);
}

#[tokio::test]
async fn a_visitor_cannot_change_a_product_outside_the_demo_set() {
    let app = one().await;
    let path = format!("/products/{}", demo_id("LAB-MUG"));
    let (_, etag, _, _) = get(&app, &path).await;

    let (status, ..) = write(
        &app,
        Method::PATCH,
        &path,
        etag.as_deref(),
        false,
        json!({"price_minor": 1}),
    )
    .await;
    let (as_admin, ..) = write(
        &app,
        Method::PATCH,
        &path,
        etag.as_deref(),
        true,
        json!({"price_minor": 1}),
    )
    .await;

    assert_eq!(status, 403);
    assert_eq!(as_admin, 200);
}

#[tokio::test]
async fn negative_stock_is_422_and_leaves_the_row_untouched() {
    let app = one().await;
    let path = format!("/products/{}/inventory", demo_id("DEMO-RACE"));
    let (_, etag, _, before) = get(&app, &path).await;

    let (status, _, problem, _) = write(
        &app,
        Method::PUT,
        &path,
        etag.as_deref(),
        false,
        json!({"on_hand": -1}),
    )
    .await;
    let (_, etag_after, _, after) = get(&app, &path).await;

    assert_eq!(status, 422);
    assert_eq!(problem["field"], "on_hand");
    assert_eq!(before, after);
    assert_eq!(etag, etag_after);
}

#[tokio::test]
async fn twenty_concurrent_writers_with_one_etag_over_two_replicas_make_exactly_one_winner() {
    let (a, b) = two().await;
    let path = format!("/products/{}/inventory", demo_id("DEMO-RACE"));
    let (_, etag, _, before) = get(&a, &path).await;
    let etag = etag.unwrap();

    let writes = (0..20).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let req = app
            .client
            .put(app.url(&path))
            .header("if-match", etag.clone())
            .json(&json!({"on_hand": 10 + i}));
        async move { req.send().await.unwrap().status().as_u16() }
    });
    let statuses = futures::future::join_all(writes).await;
    let (_, _, _, after) = get(&b, &path).await;

    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 412).count(),
        19,
        "{statuses:?}"
    );
    let received = after["received"].as_i64().unwrap();
    let total = after["on_hand"].as_i64().unwrap()
        + after["reserved"].as_i64().unwrap()
        + after["sold"].as_i64().unwrap();
    assert_eq!(received, total, "stock conserved: {before:#} → {after:#}");
}
