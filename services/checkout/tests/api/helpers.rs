//! `spawn_app()` and friends: the checkout service started by the shared harness, and a `Bus`
//! on the test's RabbitMQ names that plays every other service: it publishes their events and
//! taps what checkout sends.

use std::time::Duration;

use lab_checkout::{NAME, Settings};
use lab_contracts::{Message, Money, OrderLine, OrderPlaced, SagaTransitioned};
use lab_messaging::lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::lapin::{BasicProperties, Channel};
use lab_messaging::{Broker, Envelope, Topology};
use lab_test_support::{ServiceMigrator, TestApp, TestEnv, eventually};
use serde::Serialize;
use uuid::Uuid;

/// The migrations the test template holds.
pub const MIGRATIONS: &[ServiceMigrator] = &[(NAME, &lab_checkout::MIGRATOR)];

/// The administrator's token in tests.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// How long a message may take through outbox, relay and broker before a test gives up: it
/// takes milliseconds, so this only trips on a real failure.
pub const DEADLINE: Duration = Duration::from_secs(20);

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

/// The other services, as far as checkout can tell: a channel on the test's exchange and a tap
/// queue bound to everything checkout publishes.
pub struct Bus {
    settings: lab_messaging::AmqpSettings,
    /// Ids of the messages tapped so far.
    seen: std::sync::Mutex<std::collections::HashSet<Uuid>>,
    channel: Channel,
    tap: String,
    exchange: String,
}

impl Bus {
    /// Connects, declares checkout's queue and bindings (idempotent; its consumer may not have
    /// declared them yet when the first event is published), and binds the tap.
    pub async fn connect(env: &TestEnv) -> Self {
        let settings = env.amqp();
        let broker = Broker::start(&settings, "checkout-test", env.shutdown_token());
        let conn = eventually(DEADLINE, || {
            let b = broker.clone();
            async move { b.connection().ok() }
        })
        .await
        .expect("connected to RabbitMQ");
        let channel = conn.create_channel().await.unwrap();
        let topology = Topology::new(&settings, NAME);
        topology
            .declare(&channel, &lab_checkout::messages::routing_keys())
            .await
            .unwrap();
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let tap = queue.name().to_string();
        channel
            .queue_bind(
                tap.as_str().into(),
                topology.exchange().as_str().into(),
                "checkout.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        Self {
            channel,
            tap,
            exchange: topology.exchange(),
            settings,
            seen: std::sync::Mutex::default(),
        }
    }

    /// Declares `service`'s queue bound to `routing_keys`, as its consumer will.
    pub async fn declare(&self, service: &str, routing_keys: &[String]) {
        Topology::new(&self.settings, service)
            .declare(&self.channel, routing_keys)
            .await
            .unwrap();
    }

    /// Publishes `envelope` with its type as the routing key, confirmed by the broker.
    pub async fn publish(&self, envelope: &Envelope) {
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                envelope.kind.as_str().into(),
                BasicPublishOptions::default(),
                &envelope.to_body().unwrap(),
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Publishes `message` as a new flow, returning its envelope.
    pub async fn send<T: Message + Serialize>(&self, message: &T) -> Envelope {
        let envelope = Envelope::new(T::NAME, serde_json::to_value(message).unwrap());
        self.publish(&envelope).await;
        envelope
    }

    /// The next message checkout published, waiting up to `within`. A message seen before is
    /// skipped, as every consumer's inbox skips it: the relay publishes at least once, and a
    /// relay stopped between publish and mark-sent publishes again after a restart.
    pub async fn next_within(&self, within: Duration) -> Option<Envelope> {
        eventually(within, || async {
            let got = self
                .channel
                .basic_get(self.tap.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .ok()??;
            let message = Envelope::from_body(&got.delivery.data).ok()?;
            self.seen
                .lock()
                .unwrap()
                .insert(message.message_id)
                .then_some(message)
        })
        .await
    }

    /// Messages checkout publishes until (and including) one of type `kind`; panics with what
    /// came when it does not.
    pub async fn until(&self, kind: &str) -> Vec<Envelope> {
        let mut seen = Vec::new();
        loop {
            let Some(message) = self.next_within(DEADLINE).await else {
                let kinds: Vec<&str> = seen.iter().map(|m: &Envelope| m.kind.as_str()).collect();
                panic!("no {kind} within {DEADLINE:?}; saw {kinds:?}");
            };
            let done = message.kind == kind;
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    /// What checkout sent for one saga step: its commands, then the `SagaTransitioned` that
    /// every applied step ends with.
    pub async fn step(&self) -> Vec<Envelope> {
        self.until(SagaTransitioned::NAME).await
    }

    /// Everything checkout publishes within `quiet` (for asserting that nothing more comes).
    pub async fn drain(&self, quiet: Duration) -> Vec<Envelope> {
        let mut seen = Vec::new();
        while let Some(message) = self.next_within(quiet).await {
            seen.push(message);
        }
        seen
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
    }
}
