//! Bad input and dependencies that are down: at start, and while the service runs.

lab_test_support::fault_tests! {
    service: lab_identity,
    name: "identity",
    helpers: crate::helpers,
    checks: [unreachable_postgres, port_in_use],
}

/// The shared `redis_down_and_back` check, with the OpenBao identity needs to start.
#[tokio::test]
async fn redis_stopping_degrades_readyz_and_its_return_heals_it_without_a_restart() {
    lab_test_support::require_bao!();
    let env = lab_test_support::TestEnv::builder()
        .with_database(crate::helpers::MIGRATIONS)
        .with_private_redis()
        .with_vault()
        .start()
        .await;
    let app = env
        .spawn(lab_identity::build, crate::helpers::settings(&env))
        .await;

    lab_test_support::faults::readyz_follows_redis_down_and_back(&app).await;
}

#[tokio::test]
async fn an_unreachable_openbao_at_start_is_an_error_naming_the_variables() {
    let env = lab_test_support::TestEnv::builder()
        .with_database(crate::helpers::MIGRATIONS)
        .start()
        .await;
    let settings = lab_identity::Settings {
        http: env.http(1),
        database: env.database(lab_identity::NAME),
        redis: env.redis(),
        vault: lab_identity::VaultSettings {
            addr: lab_test_support::closed_port_url("http"),
            ..lab_identity::VaultSettings::default()
        },
        ..lab_identity::Settings::default()
    };

    let error = match lab_identity::build(settings, env.shutdown_token()).await {
        Ok(_) => panic!("identity started without its signing keys"),
        Err(e) => format!("{e:#}"),
    };

    assert!(error.contains("LAB_IDENTITY__VAULT__ADDR"), "{error}");
}
