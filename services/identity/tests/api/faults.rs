//! Bad input and dependencies that are down: at start, and while the service runs.

use lab_test_support::TestEnv;
use lab_test_support::faults::{
    build_refuses_a_port_in_use, build_refuses_an_unreachable_postgres, occupied_port,
    readyz_follows_redis_down_and_back,
};

use crate::helpers::{MIGRATIONS, env, settings};

#[tokio::test]
async fn an_unreachable_postgres_at_start_is_an_error_naming_the_url_variable() {
    let env = TestEnv::builder().start().await;
    let settings = lab_identity::Settings {
        database: env.unreachable_database("identity"),
        ..lab_identity::Settings::default()
    };

    build_refuses_an_unreachable_postgres(lab_identity::build, settings, "identity").await;
}

#[tokio::test]
async fn redis_stopping_degrades_readyz_and_its_return_heals_it_without_a_restart() {
    let env = TestEnv::builder()
        .with_database(MIGRATIONS)
        .with_private_redis()
        .start()
        .await;
    let app = env.spawn(lab_identity::build, settings(&env)).await;

    readyz_follows_redis_down_and_back(&app).await;
}

#[tokio::test]
async fn a_listen_port_already_in_use_is_an_error_saying_so() {
    let env = env().await;
    let holder = occupied_port();
    let mut settings = settings(&env);
    settings.http.listen = holder.local_addr().unwrap();

    build_refuses_a_port_in_use(
        lab_identity::build,
        settings,
        &holder.local_addr().unwrap().to_string(),
    )
    .await;
}
