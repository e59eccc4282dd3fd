//! `spawn_app()` and friends: the BFF, and the catalog instances it fronts in tests.

use std::collections::BTreeMap;

use lab_bff::Settings;
use lab_test_support::{ServiceMigrator, TestApp, TestEnv};

/// The migrations the test template holds: the catalog's, for the instances behind the BFF.
pub const MIGRATIONS: &[ServiceMigrator] = &[(lab_catalog::NAME, &lab_catalog::MIGRATOR)];

/// Settings wiring the BFF to `env` with exactly these upstreams (`service` → comma-separated
/// base URLs); none by default, so no test depends on ports it did not open.
pub fn settings(env: &TestEnv, upstreams: &[(&str, String)]) -> Settings {
    Settings {
        http: env.http(1),
        amqp: env.amqp(),
        // Frequent health pushes, so live-stream tests see events within a second.
        // Journeys only where a test turns them on.
        journeys: lab_bff::journeys::JourneySettings {
            enabled: false,
            every_s: 1,
        },
        live: lab_bff::live::LiveSettings {
            health_every_ms: 200,
            tap: true,
        },
        redis: env.redis(),
        upstreams: upstreams
            .iter()
            .map(|(service, urls)| ((*service).to_owned(), urls.clone()))
            .collect::<BTreeMap<_, _>>(),
        vault_addr: None,
        // Identity (when a test runs one) knows the BFF by this secret.
        client: lab_bff::service_token::ClientSettings {
            secret: lab_config::SecretString::new(lab_test_support::identity::CLIENT_SECRET),
            ..lab_bff::service_token::ClientSettings::default()
        },
        ..Settings::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The BFF with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = TestEnv::builder().start().await;
    env.spawn_with_routes(lab_bff::build, settings(&env, &[]), routes)
        .await
}

/// The BFF in front of `upstreams`, on `env`.
pub async fn spawn_bff(env: &TestEnv, upstreams: &[(&str, String)]) -> TestApp {
    env.spawn(lab_bff::build, settings(env, upstreams)).await
}

/// BFF replica `replica` on `env`: replicas of one env share its Redis, as `lab up`'s do.
pub async fn spawn_bff_replica(env: &TestEnv, replica: u16) -> TestApp {
    let settings = Settings {
        http: env.http(replica),
        ..settings(env, &[])
    };
    env.spawn(lab_bff::build, settings).await
}

/// The BFF in front of `upstreams` with its proxy tuned by `proxy`.
pub async fn spawn_bff_with(
    env: &TestEnv,
    upstreams: &[(&str, String)],
    proxy: lab_bff::ProxySettings,
) -> TestApp {
    let mut settings = settings(env, upstreams);
    settings.proxy = proxy;
    env.spawn(lab_bff::build, settings).await
}

/// Proxy settings scaled down so breaker tests take a fraction of a second: attempts of 300 ms,
/// calls of 1.5 s, a breaker that opens after 5 calls at half failures and breaks for 400 ms.
pub fn quick_proxy() -> lab_bff::ProxySettings {
    lab_bff::ProxySettings {
        attempt_timeout_ms: 300,
        total_timeout_ms: 1_500,
        breaker_break_ms: 400,
        ..lab_bff::ProxySettings::default()
    }
}

/// Catalog replica `replica` on `env`'s database, Redis and RabbitMQ.
#[allow(
    clippy::needless_update,
    reason = "settings the catalog adds (admin token, peers, …) keep their defaults"
)]
pub async fn spawn_catalog(env: &TestEnv, replica: u16) -> TestApp {
    let settings = lab_catalog::Settings {
        http: env.http(replica),
        database: env.database(lab_catalog::NAME),
        redis: env.redis(),
        amqp: env.amqp(),
        ..lab_catalog::Settings::default()
    };
    env.spawn(lab_catalog::build, settings).await
}
