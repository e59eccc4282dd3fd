//! `spawn_app()` and friends: the catalog service started by the shared harness.

use lab_catalog::{NAME, Settings};
use lab_config::SecretString;
use lab_test_support::identity::ADMIN_EMAIL;
use lab_test_support::{ServiceMigrator, TestApp, TestEnv};

/// The migrations the test template holds.
pub const MIGRATIONS: &[ServiceMigrator] = &[(NAME, &lab_catalog::MIGRATOR)];

/// The template of the tests that need identity beside the catalog, for real tokens.
pub const WITH_IDENTITY: &[ServiceMigrator] = &[
    (NAME, &lab_catalog::MIGRATOR),
    (lab_identity::NAME, &lab_identity::MIGRATOR),
];

/// Settings wiring the service to `env`'s infrastructure.
#[allow(
    clippy::needless_update,
    reason = "settings the catalog adds (admin token, peers, …) keep their defaults"
)]
pub fn settings(env: &TestEnv) -> Settings {
    Settings {
        http: env.http(1),
        database: env.database(NAME),
        redis: env.redis(),
        amqp: env.amqp(),
        ..Settings::default()
    }
}

/// A fresh environment (its own database, Redis prefix).
pub async fn env() -> TestEnv {
    TestEnv::builder().with_database(MIGRATIONS).start().await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The service with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = env().await;
    env.spawn_with_routes(lab_catalog::build, settings(&env), routes)
        .await
}

/// A fresh environment with identity's schema and an OpenBao (identity's keys live there).
pub async fn env_with_identity() -> TestEnv {
    TestEnv::builder()
        .with_database(WITH_IDENTITY)
        .with_vault()
        .start()
        .await
}

/// Identity's settings on `env` (which needs [`env_with_identity`]): [`ADMIN_EMAIL`] registers
/// as an administrator.
pub fn identity_settings(env: &TestEnv) -> lab_identity::Settings {
    lab_identity::Settings {
        http: env.http(1),
        database: env.database(lab_identity::NAME),
        redis: env.redis(),
        vault: lab_identity::VaultSettings {
            addr: env.vault().addr.clone(),
            token: SecretString::new(env.vault().root_token.clone()),
            ..lab_identity::VaultSettings::default()
        },
        admin_emails: ADMIN_EMAIL.into(),
        ..lab_identity::Settings::default()
    }
}

/// Identity on `env`, with [`identity_settings`].
pub async fn spawn_identity(env: &TestEnv) -> TestApp {
    env.spawn(lab_identity::build, identity_settings(env)).await
}

/// Where `identity` publishes its keys, as a service's auth settings name it.
pub fn auth_settings(identity: &TestApp) -> lab_auth::AuthSettings {
    lab_auth::AuthSettings {
        jwks_url: lab_test_support::identity::jwks_url(identity),
        ..lab_auth::AuthSettings::default()
    }
}
