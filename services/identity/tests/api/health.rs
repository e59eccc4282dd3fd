//! The platform surface: probes, metrics, OpenAPI, ids, problem+json, graceful shutdown.

lab_test_support::platform_tests! {
    spawn: crate::helpers::spawn_app,
    spawn_with_routes: crate::helpers::spawn_app_with_routes,
    service: "identity",
    dependencies: ["postgres", "redis"],
    paths: ["/me", "/.well-known/jwks.json"],
}

#[tokio::test]
async fn openapi_documents_every_identity_route_with_its_method_and_the_bearer_scheme() {
    let app = crate::helpers::spawn_app().await;

    let (_, doc) = app.get_json("/openapi.json").await;

    for (path, method) in [
        ("/register", "post"),
        ("/login", "post"),
        ("/token/refresh", "post"),
        ("/token/client", "post"),
        ("/logout", "post"),
        ("/me", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/admin/keys/rotate", "post"),
        ("/admin/users/{id}/sessions", "delete"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
