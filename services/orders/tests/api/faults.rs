//! Bad input and dependencies that are down: at start, and while the service runs.

use lab_test_support::TestEnv;
use lab_test_support::faults::{
    build_refuses_a_port_in_use, build_refuses_an_unreachable_postgres, occupied_port,
    readyz_is_503_with_rabbitmq_down,
};

use crate::helpers::{env, settings};

#[tokio::test]
async fn an_unreachable_postgres_at_start_is_an_error_naming_the_url_variable() {
    let env = TestEnv::builder().start().await;
    let settings = lab_orders::Settings {
        database: env.unreachable_database("orders"),
        ..lab_orders::Settings::default()
    };

    build_refuses_an_unreachable_postgres(lab_orders::build, settings, "orders").await;
}

#[tokio::test]
async fn an_unreachable_rabbitmq_makes_readyz_503_with_the_reason() {
    let env = env().await;
    let settings = lab_orders::Settings {
        amqp: env.unreachable_amqp(),
        ..settings(&env)
    };

    let app = env.spawn(lab_orders::build, settings).await;

    readyz_is_503_with_rabbitmq_down(&app).await;
}

#[tokio::test]
async fn a_listen_port_already_in_use_is_an_error_saying_so() {
    let env = env().await;
    let holder = occupied_port();
    let mut settings = settings(&env);
    settings.http.listen = holder.local_addr().unwrap();

    build_refuses_a_port_in_use(
        lab_orders::build,
        settings,
        &holder.local_addr().unwrap().to_string(),
    )
    .await;
}
