//! Bad input to any route answers the provider's error shape with a 4xx, never a 5xx.

use axum::http::StatusCode;
use serde_json::json;

use crate::helpers::Psp;

/// A form body, as pairs.
type Form<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn malformed_stripe_parameters_are_400_naming_the_parameter() {
    let psp = Psp::start(&[]).await;
    let cases: [(Form, &str, &str); 7] = [
        (&[("currency", "eur")], "parameter_missing", "amount"),
        (
            &[("amount", "abc"), ("currency", "eur")],
            "parameter_invalid",
            "amount",
        ),
        (
            &[("amount", "100000000"), ("currency", "eur")],
            "parameter_invalid",
            "amount",
        ),
        (
            &[("amount", "-5"), ("currency", "eur")],
            "parameter_invalid",
            "amount",
        ),
        (
            &[("amount", "5"), ("currency", "euro!")],
            "parameter_invalid",
            "currency",
        ),
        (
            &[("amount", "5"), ("currency", "eur"), ("expires_at", "1")],
            "parameter_invalid",
            "expires_at",
        ),
        (
            &[
                ("amount", "5"),
                ("currency", "eur"),
                ("metadata[lab_scenario]", "nope"),
            ],
            "parameter_invalid",
            "metadata[lab_scenario]",
        ),
    ];

    for (form, code, param) in cases {
        let (status, body) = psp.stripe("/v1/checkout/sessions", form).await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{form:?}: {body:#}");
        assert_eq!(body["error"]["code"], code, "{form:?}");
        assert_eq!(body["error"]["param"], param, "{form:?}");
    }
}

#[tokio::test]
async fn unknown_stripe_objects_are_404_resource_missing() {
    let psp = Psp::start(&[]).await;

    let (session, body) = psp.stripe_get("/v1/checkout/sessions/cs_nope").await;
    let (capture, _) = psp.stripe("/v1/payment_intents/pi_nope/capture", &[]).await;
    let (refund, _) = psp
        .stripe("/v1/refunds", &[("payment_intent", "pi_nope")])
        .await;

    assert_eq!(session, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "resource_missing");
    assert_eq!(capture, StatusCode::NOT_FOUND);
    assert_eq!(refund, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_paypal_bodies_are_400_invalid_request() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;
    let unit = |value: &str| json!({"intent": "AUTHORIZE", "purchase_units": [{"amount": {"currency_code": "EUR", "value": value}}]});
    let cases = [
        unit("1.234"),
        unit("-1"),
        unit("0.00"),
        json!({"intent": "CAPTURE", "purchase_units": [{"amount": {"currency_code": "EUR", "value": "1"}}]}),
        json!({"intent": "AUTHORIZE", "purchase_units": []}),
        json!({"intent": "AUTHORIZE", "purchase_units": [{"amount": {"currency_code": "eu", "value": "1"}}]}),
        json!([1, 2]),
    ];

    for body in &cases {
        let (status, error) = psp
            .paypal(&token, "/v2/checkout/orders", Some(body), None)
            .await;

        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {error:#}");
        assert_eq!(error["name"], "INVALID_REQUEST", "{body}");
    }
}

#[tokio::test]
async fn a_paypal_body_that_is_not_json_is_400_malformed_request_json() {
    let psp = Psp::start(&[]).await;
    let token = psp.paypal_token().await;

    let response = psp
        .app
        .client
        .post(psp.app.url("/paypal/v2/checkout/orders"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let (status, body) = crate::helpers::json(response).await;

    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["details"][0]["issue"], "MALFORMED_REQUEST_JSON");
}

#[tokio::test]
async fn a_token_request_without_client_credentials_grant_is_400() {
    let psp = Psp::start(&[]).await;

    let response = psp
        .app
        .client
        .post(psp.app.url("/paypal/v1/oauth2/token"))
        .basic_auth(
            crate::helpers::CLIENT_ID,
            Some(crate::helpers::CLIENT_SECRET),
        )
        .form(&[("grant_type", "password")])
        .send()
        .await
        .unwrap();

    assert_eq!(response.status().as_u16(), 400);
}

#[tokio::test]
async fn sandbox_calls_on_unknown_ids_and_bad_scenarios_are_problems() {
    let psp = Psp::start(&[]).await;
    let session = psp.stripe_session("500", "o", &[]).await;
    let id = session["id"].as_str().unwrap();
    let put = |body: serde_json::Value| {
        psp.app
            .client
            .put(psp.app.url(&format!("/sandbox/sessions/{id}/scenario")))
            .json(&body)
            .send()
    };

    let (unknown, _) = psp.buyer("cs_nope", "approve").await;
    let bad_knob = put(json!({"no_such_knob": true})).await.unwrap();
    let bad_preset = put(json!("no_such_preset")).await.unwrap();
    let bad_auto = put(json!({"auto": "sometimes"})).await.unwrap();
    let cert = psp.app.get("/paypal/certs/ca-key.pem").await;

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(bad_knob.status().as_u16(), 422);
    assert_eq!(bad_preset.status().as_u16(), 422);
    assert_eq!(bad_auto.status().as_u16(), 422);
    assert_eq!(cert.status().as_u16(), 404);
}

#[tokio::test]
async fn an_unknown_url_under_a_provider_is_404_in_that_providers_shape() {
    let psp = Psp::start(&[]).await;

    let (stripe, stripe_body) = psp.stripe("/v1/charges", &[]).await;
    let token = psp.paypal_token().await;
    let (paypal, paypal_body) = psp.paypal(&token, "/v1/payments/payment", None, None).await;

    assert_eq!(stripe, StatusCode::NOT_FOUND);
    assert_eq!(stripe_body["error"]["type"], "invalid_request_error");
    assert_eq!(paypal, StatusCode::NOT_FOUND);
    assert_eq!(paypal_body["name"], "RESOURCE_NOT_FOUND");
}
