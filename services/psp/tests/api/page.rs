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
