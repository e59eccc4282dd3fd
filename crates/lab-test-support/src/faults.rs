//! Dependencies that are down, checked the same way for every service that has them: start-up
//! refuses an unreachable PostgreSQL with a message naming the variable to fix, `/readyz` says
//! which dependency is down and why, and a service recovers on its own when it returns.

use std::future::Future;

use lab_http::Application;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::TestApp;

/// `build` with `settings` pointing at an unreachable PostgreSQL fails (no panic) with a message
/// that says so and names `LAB_<SERVICE>__DATABASE__URL`.
pub async fn build_refuses_an_unreachable_postgres<S, F, Fut>(build: F, settings: S, service: &str)
where
    F: FnOnce(S, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Application>>,
{
    let shutdown = CancellationToken::new();

    let result = build(settings, shutdown.clone()).await;

    shutdown.cancel();
    let message = match result {
        Ok(app) => panic!(
            "{service} built against an unreachable database at {}",
            app.addr
        ),
        Err(e) => format!("{e:#}"),
    };
    let variable = format!("{}DATABASE__URL", lab_config::env_prefix(service));
    assert!(message.contains("unreachable"), "{message}");
    assert!(message.contains(&variable), "{message}");
    assert!(!message.contains('\n'), "not one line: {message}");
}

/// The named check in a `/readyz` body.
pub fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// With RabbitMQ unreachable, `/readyz` is 503 `not_ready` with `rabbitmq` down and the reason
/// the connection failed.
pub async fn readyz_is_503_with_rabbitmq_down(app: &TestApp) {
    // The first report may still say "not connected yet"; wait for the real reason.
    let body = app
        .wait_readyz(|b| {
            let amqp = check(b, "rabbitmq");
            amqp["status"] == "down" && amqp["reason"] != "not connected yet"
        })
        .await;
    let (status, _) = app.get_json("/readyz").await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body:#}");
    assert_eq!(body["status"], "not_ready");
    let reason = check(&body, "rabbitmq")["reason"]
        .as_str()
        .unwrap_or_default();
    assert!(!reason.is_empty(), "{body:#}");
}

/// Stops the env's private Redis under a running `app` and starts it again: `/readyz` goes
/// `degraded` (still 200: Redis is not critical) with Redis down and why, then `ready` again
/// without a restart.
pub async fn readyz_follows_redis_down_and_back(app: &TestApp) {
    app.wait_ready().await;

    app.env.stop_redis().await;

    let body = app
        .wait_readyz(|b| check(b, "redis")["status"] == "down")
        .await;
    let (status, _) = app.get_json("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body:#}");
    assert_eq!(body["status"], "degraded");
    let redis = check(&body, "redis");
    assert_eq!(redis["critical"], false);
    assert!(
        redis["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body:#}"
    );

    app.env.start_redis().await;

    let body = app.wait_readyz(|b| b["status"] == "ready").await;
    assert_eq!(check(&body, "redis")["status"], "up");
}

/// `build` with `settings` whose listen address is already taken fails (no panic) with a
/// one-line message saying the address is in use and how to fix it. `listen` must be the
/// address `settings` asks for; the caller holds it (see [`occupied_port`]).
pub async fn build_refuses_a_port_in_use<S, F, Fut>(build: F, settings: S, listen: &str)
where
    F: FnOnce(S, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<Application>>,
{
    let shutdown = CancellationToken::new();

    let result = build(settings, shutdown.clone()).await;

    shutdown.cancel();
    let message = match result {
        Ok(app) => panic!("built on {} although {listen} is taken", app.addr),
        Err(e) => format!("{e:#}"),
    };
    assert!(message.contains(listen), "{message}");
    assert!(message.contains("already in use"), "{message}");
    assert!(!message.contains('\n'), "not one line: {message}");
}

/// A loopback listener holding a port, for "port already in use" tests; the port stays taken
/// while the listener lives.
pub fn occupied_port() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("binding a loopback port: {e}"))
}

/// The fault tests every database-backed service shares, one `#[tokio::test]` per named check,
/// built on the service's test helpers (`env()`, `settings(&env)`, `MIGRATIONS`):
///
/// ```ignore
/// lab_test_support::fault_tests! {
///     service: lab_orders, name: "orders", helpers: crate::helpers,
///     checks: [unreachable_postgres, unreachable_rabbitmq, port_in_use],
/// }
/// ```
/// Checks: `unreachable_postgres` (start-up error names the URL variable), `unreachable_rabbitmq`
/// (`/readyz` 503 with the reason), `redis_down_and_back` (degraded, then healed without a
/// restart), `port_in_use` (a one-line error naming the address).
#[macro_export]
macro_rules! fault_tests {
    (
        service: $krate:ident,
        name: $name:expr,
        helpers: $helpers:path,
        checks: [$($check:ident),* $(,)?] $(,)?
    ) => {
        $( $crate::fault_tests!(@$check $krate, $name, $helpers); )*
    };
    (@unreachable_postgres $krate:ident, $name:expr, $helpers:path) => {
        #[::tokio::test]
        async fn an_unreachable_postgres_at_start_is_an_error_naming_the_url_variable() {
            let env = $crate::TestEnv::builder().start().await;
            let settings = $krate::Settings {
                database: env.unreachable_database($name),
                ..$krate::Settings::default()
            };

            $crate::faults::build_refuses_an_unreachable_postgres($krate::build, settings, $name)
                .await;
        }
    };
    (@unreachable_rabbitmq $krate:ident, $name:expr, $helpers:path) => {
        #[::tokio::test]
        async fn an_unreachable_rabbitmq_makes_readyz_503_with_the_reason() {
            use $helpers as helpers;
            let env = helpers::env().await;
            let settings = $krate::Settings {
                amqp: env.unreachable_amqp(),
                ..helpers::settings(&env)
            };

            let app = env.spawn($krate::build, settings).await;

            $crate::faults::readyz_is_503_with_rabbitmq_down(&app).await;
        }
    };
    (@redis_down_and_back $krate:ident, $name:expr, $helpers:path) => {
        #[::tokio::test]
        async fn redis_stopping_degrades_readyz_and_its_return_heals_it_without_a_restart() {
            use $helpers as helpers;
            let env = $crate::TestEnv::builder()
                .with_database(helpers::MIGRATIONS)
                .with_private_redis()
                .start()
                .await;
            let app = env.spawn($krate::build, helpers::settings(&env)).await;

            $crate::faults::readyz_follows_redis_down_and_back(&app).await;
        }
    };
    (@port_in_use $krate:ident, $name:expr, $helpers:path) => {
        #[::tokio::test]
        async fn a_listen_port_already_in_use_is_an_error_saying_so() {
            use $helpers as helpers;
            let env = helpers::env().await;
            let holder = $crate::faults::occupied_port();
            let address = holder.local_addr().expect("the holder's address");
            let mut settings = helpers::settings(&env);
            settings.http.listen = address;

            $crate::faults::build_refuses_a_port_in_use($krate::build, settings, &address.to_string())
                .await;
        }
    };
}
