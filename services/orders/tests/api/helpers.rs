//! `spawn_app()` and friends: the orders service started by the shared harness, with a real
//! catalog beside it for prices, and a tap on the test's RabbitMQ exchange.

use std::time::Duration;

use lab_config::SecretString;
use lab_messaging::{Broker, Topology};
use lab_orders::{NAME, Settings};
use lab_test_support::identity::{ADMIN_EMAIL, jwks_url};
use lab_test_support::{Bus, ServiceMigrator, TestApp, TestEnv, eventually};
use serde_json::Value;

/// The migrations the test template holds: orders', and catalog's for the catalog beside it.
pub const MIGRATIONS: &[ServiceMigrator] = &[
    (NAME, &lab_orders::MIGRATOR),
    (lab_catalog::NAME, &lab_catalog::MIGRATOR),
];

/// The template of the tests that need identity beside orders and catalog, for real tokens.
pub const WITH_IDENTITY: &[ServiceMigrator] = &[
    (NAME, &lab_orders::MIGRATOR),
    (lab_catalog::NAME, &lab_catalog::MIGRATOR),
    (lab_identity::NAME, &lab_identity::MIGRATOR),
];

/// The catalog's administrator token in tests (to create products in other currencies).
pub const CATALOG_ADMIN: &str = "test-admin-token";

/// How long a message may take to cross RabbitMQ and a relay or consumer.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Settings wiring the service to `env`'s infrastructure; catalog at a closed port unless set.
pub fn settings(env: &TestEnv) -> Settings {
    Settings {
        http: env.http(1),
        database: env.database(NAME),
        amqp: env.amqp(),
        redis: env.redis(),
        catalog_urls: lab_test_support::closed_port_url("http"),
        ..Settings::default()
    }
}

/// A fresh environment (its own database).
pub async fn env() -> TestEnv {
    TestEnv::builder().with_database(MIGRATIONS).start().await
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with_routes(axum::Router::new()).await
}

/// The service with test-only `routes` added.
pub async fn spawn_app_with_routes(routes: axum::Router) -> TestApp {
    let env = env().await;
    env.spawn_with_routes(lab_orders::build, settings(&env), routes)
        .await
}

/// A catalog on `env` (its seed products give prices), with the test administrator token.
#[allow(
    clippy::needless_update,
    reason = "settings the catalog adds (peers, …) keep their defaults"
)]
pub async fn spawn_catalog(env: &TestEnv) -> TestApp {
    let settings = lab_catalog::Settings {
        http: env.http(1),
        database: env.database(lab_catalog::NAME),
        redis: env.redis(),
        amqp: env.amqp(),
        admin_token: Some(SecretString::new(CATALOG_ADMIN)),
        ..lab_catalog::Settings::default()
    };
    env.spawn(lab_catalog::build, settings).await
}

/// Orders and the catalog it prices from, on one fresh environment.
pub struct Shop {
    pub orders: TestApp,
    pub catalog: TestApp,
}

pub async fn shop() -> Shop {
    let env = env().await;
    let catalog = spawn_catalog(&env).await;
    let orders = env
        .spawn(
            lab_orders::build,
            Settings {
                catalog_urls: catalog.base_url.clone(),
                ..settings(&env)
            },
        )
        .await;
    Shop { orders, catalog }
}

/// A line of a seed product.
pub fn line(sku: &str, quantity: i64) -> Value {
    serde_json::json!({
        "product_id": lab_catalog::seed::seed_id(sku),
        "quantity": quantity,
    })
}

/// `POST /orders` with an optional key and customer → (status, headers, body).
pub async fn place(
    app: &TestApp,
    key: Option<&str>,
    customer: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut request = app.client.post(app.url("/orders")).json(body);
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    if let Some(customer) = customer {
        request = request.header("x-lab-customer", customer);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `GET /orders/{id}` as `customer` → (status, body).
pub async fn get_order(app: &TestApp, id: &str, customer: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/orders/{id}")))
        .header("x-lab-customer", customer)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The shared test bus with the orders queue declared (a message published before the
/// service's consumer has declared it is not lost) and a tap on everything orders publishes.
pub async fn tap(app: &TestApp) -> Bus {
    let consumers = [(NAME, lab_orders::messages::routing_keys())];
    Bus::connect(&app.env, &consumers, "orders.#").await
}

/// Declares each `(service, routing keys)` queue with its bindings on `env`'s broker, as the
/// services' consumers will (idempotent): a message published before a consumer has declared its
/// queue would otherwise be routed nowhere and lost.
pub async fn declare_queues(env: &TestEnv, queues: &[(&str, Vec<String>)]) {
    let settings = env.amqp();
    let broker = Broker::start(&settings, "orders-test", env.shutdown_token());
    let conn = eventually(DEADLINE, || {
        let b = broker.clone();
        async move { b.connection().ok() }
    })
    .await
    .unwrap();
    for (service, keys) in queues {
        // A channel each: a failed declaration closes the channel it ran on.
        let channel = conn.create_channel().await.unwrap();
        Topology::new(&settings, service)
            .declare(&channel, keys)
            .await
            .unwrap();
        let _ = channel.close(200, "declared".into()).await;
    }
}

/// Identity, a catalog and orders on one fresh environment (with OpenBao for identity's keys),
/// catalog and orders checking identity's tokens; [`ADMIN_EMAIL`] registers as an administrator.
pub struct SignedInShop {
    pub identity: TestApp,
    pub catalog: TestApp,
    pub orders: TestApp,
}

pub async fn signed_in_shop() -> SignedInShop {
    let env = TestEnv::builder()
        .with_database(WITH_IDENTITY)
        .with_vault()
        .start()
        .await;
    let identity_settings = lab_identity::Settings {
        http: env.http(1),
        database: env.database(lab_identity::NAME),
        redis: env.redis(),
        vault: lab_identity::VaultSettings {
            addr: env.vault().addr.clone(),
            token: SecretString::new(env.vault().root_token.clone()),
            ..lab_identity::VaultSettings::default()
        },
        admin_emails: ADMIN_EMAIL.into(),
        client: lab_identity::ClientSettings {
            secret: SecretString::new(lab_test_support::identity::CLIENT_SECRET),
            ..lab_identity::ClientSettings::default()
        },
        ..lab_identity::Settings::default()
    };
    let identity = env.spawn(lab_identity::build, identity_settings).await;
    let auth = lab_auth::AuthSettings {
        jwks_url: jwks_url(&identity),
        ..lab_auth::AuthSettings::default()
    };
    let catalog = env
        .spawn(
            lab_catalog::build,
            lab_catalog::Settings {
                http: env.http(1),
                database: env.database(lab_catalog::NAME),
                redis: env.redis(),
                amqp: env.amqp(),
                admin_token: Some(SecretString::new(CATALOG_ADMIN)),
                auth: auth.clone(),
                ..lab_catalog::Settings::default()
            },
        )
        .await;
    let orders = env
        .spawn(
            lab_orders::build,
            Settings {
                catalog_urls: catalog.base_url.clone(),
                auth,
                ..settings(&env)
            },
        )
        .await;
    SignedInShop {
        identity,
        catalog,
        orders,
    }
}
