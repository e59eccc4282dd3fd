//! The platform surface: probes, metrics, OpenAPI, ids, problem+json, graceful shutdown.

lab_test_support::platform_tests! {
    spawn: crate::helpers::spawn_app,
    spawn_with_routes: crate::helpers::spawn_app_with_routes,
    service: "checkout",
    dependencies: ["postgres", "rabbitmq"],
    paths: ["/sagas", "/sagas/{order_id}"],
}
