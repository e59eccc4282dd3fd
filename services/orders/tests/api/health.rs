//! The platform surface: probes, metrics, OpenAPI, ids, problem+json, graceful shutdown.

lab_test_support::platform_tests! {
    spawn: crate::helpers::spawn_app,
    spawn_with_routes: crate::helpers::spawn_app_with_routes,
    service: "orders",
    dependencies: ["postgres", "rabbitmq"],
    paths: ["/claims/{key}", "/orders/{id}"],
}

#[tokio::test]
async fn openapi_documents_every_write_of_the_orders_api() {
    let app = crate::helpers::spawn_app().await;

    let (_, doc) = app.get_json("/openapi.json").await;

    for path in ["/claims", "/orders"] {
        assert!(doc["paths"][path]["post"].is_object(), "{path}: {doc:#}");
    }
    let place = &doc["paths"]["/orders"]["post"];
    assert!(place["responses"]["202"].is_object());
    assert!(
        place["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
    );
}
