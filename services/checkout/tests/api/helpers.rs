//! `spawn_app()` and friends: the checkout service started by the shared harness, and a `Bus`
//! on the test's RabbitMQ names that plays every other service: it publishes their events and
//! taps what checkout sends.

use lab_checkout::{NAME, Settings};
use lab_contracts::{Message, Money, OrderLine, OrderPlaced, SagaTransitioned};
use lab_messaging::Envelope;
use lab_test_support::{ServiceMigrator, TestApp, TestEnv};
use uuid::Uuid;

/// The migrations the test template holds.
pub const MIGRATIONS: &[ServiceMigrator] = &[(NAME, &lab_checkout::MIGRATOR)];

/// The administrator's token in tests.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Settings wiring the service to `env`'s infrastructure.
pub fn settings(env: &TestEnv) -> Settings {
    Settings {
        http: env.http(1),
        database: env.database(NAME),
        amqp: env.amqp(),
        admin_token: Some(lab_config::SecretString::new(ADMIN_TOKEN)),
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
    env.spawn_with_routes(lab_checkout::build, settings(&env), routes)
        .await
}

/// The other services, as far as checkout can tell: the shared test bus with checkout's queue
/// declared and a tap on everything checkout publishes.
pub struct Bus(lab_test_support::Bus);

impl Bus {
    pub async fn connect(env: &TestEnv) -> Self {
        let consumers = [(NAME, lab_checkout::messages::routing_keys())];
        Self(lab_test_support::Bus::connect(env, &consumers, "checkout.#").await)
    }

    /// What checkout sent for one saga step: its commands, then the `SagaTransitioned` that
    /// every applied step ends with.
    pub async fn step(&self) -> Vec<Envelope> {
        self.0.until(SagaTransitioned::NAME).await
    }

    /// Sends `message` and answers the [`step`](Self::step) it causes.
    pub async fn step_on<T: Message + serde::Serialize>(&self, message: &T) -> Vec<Envelope> {
        self.0.send(message).await;
        self.step().await
    }
}

impl std::ops::Deref for Bus {
    type Target = lab_test_support::Bus;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}
/// The kinds of `messages`, in order.
pub fn kinds(messages: &[Envelope]) -> Vec<&str> {
    messages.iter().map(|m| m.kind.as_str()).collect()
}

pub fn usd(amount_minor: i64) -> Money {
    Money {
        amount_minor,
        currency: "USD".into(),
    }
}

/// An order of 2 × 1250 + 1 × 500 = 3000 (USD 30.00), paid through stripe.
pub fn order(order_id: Uuid) -> OrderPlaced {
    let line = |quantity, unit_price_minor| OrderLine {
        product_id: Uuid::now_v7(),
        quantity,
        unit_price_minor,
    };
    order_of(order_id, vec![line(2, 1250), line(1, 500)])
}

/// An order of `lines`, its total their sum, paid through stripe.
pub fn order_of(order_id: Uuid, lines: Vec<OrderLine>) -> OrderPlaced {
    let total = lines
        .iter()
        .map(|l| i64::from(l.quantity) * l.unit_price_minor)
        .sum();
    OrderPlaced {
        order_id,
        customer: "visitor:test".into(),
        lines,
        total: usd(total),
        provider: "stripe".into(),
        payment_window_s: None,
    }
}
