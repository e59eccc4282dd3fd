//! The platform surface: probes, metrics, OpenAPI, ids, problem+json, graceful shutdown.

lab_test_support::platform_tests! {
    spawn: crate::helpers::spawn_app,
    spawn_with_routes: crate::helpers::spawn_app_with_routes,
    service: "psp",
    dependencies: [],
    paths: ["/stripe/v1/checkout/sessions/{id}", "/paypal/v2/checkout/orders/{id}", "/sandbox/webhooks", "/pay/{id}"],
}
