//! `spawn_app()` and friends: the PSP started by the shared harness.

use lab_psp::Settings;
use lab_test_support::{TestApp, TestEnv};

/// Settings wiring the service to `env`.
pub fn settings(env: &TestEnv) -> Settings {
    Settings { http: env.http(1) }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The service with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = TestEnv::builder().start().await;
    env.spawn_with_routes(lab_psp::build, settings(&env), routes)
        .await
}
