//! The hosted payment page.

use axum::http::StatusCode;

use crate::helpers::Psp;

#[tokio::test]
async fn the_hosted_page_shows_the_amount_and_reference_with_both_buttons() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("1234", "order-42", &[]).await;

    let response = psp
        .app
        .get(&format!("/pay/{}", session["id"].as_str().unwrap()))
        .await;
    let status = response.status().as_u16();
    let html = response.text().await.unwrap();

    assert_eq!(status, 200);
    assert!(html.contains("12.34 EUR"), "{html}");
    assert!(html.contains("order-42"));
    assert!(html.contains(r#"id="approve""#) && html.contains(r#"id="decline""#));
    assert!(!html.contains("disabled>"));
}

#[tokio::test]
async fn the_page_of_an_approved_session_disables_the_buttons() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("1234", "order-43", &[]).await;
    let id = session["id"].as_str().unwrap();
    let (status, _) = psp.buyer(id, "approve").await;

    let html = psp
        .app
        .get(&format!("/pay/{id}"))
        .await
        .text()
        .await
        .unwrap();

    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("disabled"));
    assert!(html.contains("complete"));
}

#[tokio::test]
async fn the_page_of_an_unknown_id_is_404() {
    let psp = Psp::start(&[]).await;

    let response = psp.app.get("/pay/cs_unknown").await;

    assert_eq!(response.status().as_u16(), 404);
}

#[tokio::test]
async fn the_page_links_back_to_the_shop_with_the_session_id_filled_in() {
    let psp = Psp::start(&[]).await;
    let session = psp
        .stripe_session(
            "1234",
            "order-44",
            &[(
                "success_url",
                "http://shop.test/done?s={CHECKOUT_SESSION_ID}",
            )],
        )
        .await;
    let id = session["id"].as_str().unwrap();

    let html = psp
        .app
        .get(&format!("/pay/{id}"))
        .await
        .text()
        .await
        .unwrap();

    assert!(
        html.contains(&format!("http://shop.test/done?s={id}")),
        "{html}"
    );
}

#[tokio::test]
async fn the_page_of_a_paypal_order_links_back_to_its_return_url() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let extra = serde_json::json!({"payment_source": {"paypal": {"experience_context": {"return_url": "http://shop.test/back"}}}});
    let order = psp.paypal_order(&token, "5.00", "order-45", extra).await;

    let html = psp
        .app
        .get(&format!("/pay/{}", order["id"].as_str().unwrap()))
        .await
        .text()
        .await
        .unwrap();

    assert!(html.contains("http://shop.test/back"), "{html}");
    assert!(html.contains("5.00 EUR"));
}
