//! Dependencies that are down: at start, and while the service runs.

use lab_test_support::TestEnv;
use lab_test_support::faults::{
    build_refuses_an_unreachable_postgres, readyz_is_503_with_rabbitmq_down,
};

use crate::helpers::{env, settings};

#[tokio::test]
async fn an_unreachable_postgres_at_start_is_an_error_naming_the_url_variable() {
    let env = TestEnv::builder().start().await;
    let settings = lab_payments::Settings {
        database: env.unreachable_database("payments"),
        ..lab_payments::Settings::default()
    };

    build_refuses_an_unreachable_postgres(lab_payments::build, settings, "payments").await;
}

#[tokio::test]
async fn an_unreachable_rabbitmq_makes_readyz_503_with_the_reason() {
    let env = env().await;
    let settings = lab_payments::Settings {
        amqp: env.unreachable_amqp(),
        ..settings(&env)
    };

    let app = env.spawn(lab_payments::build, settings).await;

    readyz_is_503_with_rabbitmq_down(&app).await;
}
