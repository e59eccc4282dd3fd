//! A test's own seat on RabbitMQ: it publishes messages as the other services would and taps
//! what the service under test publishes, on the test's prefixed names.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use lab_contracts::Message;
use lab_messaging::lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::lapin::{BasicProperties, Channel};
use lab_messaging::{AmqpSettings, Broker, Envelope, Topology};
use serde::Serialize;
use uuid::Uuid;

use crate::{TestEnv, eventually};

/// How long a message may take through outbox, relay and broker before a test gives up: it
/// takes milliseconds, so this only trips on a real failure.
pub const BUS_DEADLINE: Duration = Duration::from_secs(20);

/// A channel on the test's exchange and a tap queue bound to one routing pattern.
pub struct Bus {
    settings: AmqpSettings,
    channel: Channel,
    tap: String,
    exchange: String,
    /// Ids of the messages tapped so far.
    seen: Mutex<HashSet<Uuid>>,
}

impl Bus {
    /// Connects to `env`'s broker, declares each `(service, routing keys)` queue with its
    /// bindings as the services' consumers will (idempotent: a message published before a
    /// consumer has declared its queue would otherwise be routed nowhere and lost), and binds a
    /// tap to `pattern` (e.g. `checkout.#`).
    pub async fn connect(env: &TestEnv, consumers: &[(&str, Vec<String>)], pattern: &str) -> Self {
        let settings = env.amqp();
        let broker = Broker::start(&settings, "test-bus", env.shutdown_token());
        let conn = eventually(BUS_DEADLINE, || {
            let b = broker.clone();
            async move { b.connection().ok() }
        })
        .await
        .unwrap_or_else(|| panic!("no RabbitMQ connection within {BUS_DEADLINE:?}"));
        let channel = conn
            .create_channel()
            .await
            .unwrap_or_else(|e| panic!("opening a channel: {e}"));
        let exchange = Topology::new(&settings, "test-bus").exchange();
        let bus = Self {
            settings,
            channel,
            tap: String::new(),
            exchange,
            seen: Mutex::default(),
        };
        for (service, keys) in consumers {
            bus.declare(service, keys).await;
        }
        Topology::new(&bus.settings, "test-bus")
            .declare_exchange(&bus.channel)
            .await
            .unwrap_or_else(|e| panic!("declaring the exchange: {e}"));
        let queue = bus
            .channel
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
            .unwrap_or_else(|e| panic!("declaring the tap: {e}"));
        let tap = queue.name().to_string();
        bus.channel
            .queue_bind(
                tap.as_str().into(),
                bus.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("binding the tap: {e}"));
        Self { tap, ..bus }
    }

    /// Declares `service`'s queue bound to `routing_keys`, as its consumer will.
    pub async fn declare(&self, service: &str, routing_keys: &[String]) {
        Topology::new(&self.settings, service)
            .declare(&self.channel, routing_keys)
            .await
            .unwrap_or_else(|e| panic!("declaring {service}'s queue: {e}"));
    }

    /// Publishes `envelope` with its type as the routing key, confirmed by the broker.
    pub async fn publish(&self, envelope: &Envelope) {
        let body = envelope
            .to_body()
            .unwrap_or_else(|e| panic!("encoding an envelope: {e}"));
        self.channel
            .basic_publish(
                self.exchange.as_str().into(),
                envelope.kind.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("publishing {}: {e}", envelope.kind))
            .await
            .unwrap_or_else(|e| panic!("confirming {}: {e}", envelope.kind));
    }

    /// Publishes `message` as a new flow, returning its envelope.
    pub async fn send<T: Message + Serialize>(&self, message: &T) -> Envelope {
        let payload =
            serde_json::to_value(message).unwrap_or_else(|e| panic!("encoding {}: {e}", T::NAME));
        let envelope = Envelope::new(T::NAME, payload);
        self.publish(&envelope).await;
        envelope
    }

    /// The next tapped message, waiting up to `within`. A message seen before is skipped, as
    /// every consumer's inbox skips it: relays publish at least once.
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
                .unwrap_or_else(PoisonError::into_inner)
                .insert(message.message_id)
                .then_some(message)
        })
        .await
    }

    /// Tapped messages until (and including) one of type `kind`; panics with what came when it
    /// does not.
    pub async fn until(&self, kind: &str) -> Vec<Envelope> {
        let mut seen = Vec::new();
        loop {
            let Some(message) = self.next_within(BUS_DEADLINE).await else {
                let kinds: Vec<&str> = seen.iter().map(|m: &Envelope| m.kind.as_str()).collect();
                panic!("no {kind} within {BUS_DEADLINE:?}; saw {kinds:?}");
            };
            let done = message.kind == kind;
            seen.push(message);
            if done {
                return seen;
            }
        }
    }

    /// Everything tapped within `quiet` (for asserting that nothing more comes).
    pub async fn drain(&self, quiet: Duration) -> Vec<Envelope> {
        let mut seen = Vec::new();
        while let Some(message) = self.next_within(quiet).await {
            seen.push(message);
        }
        seen
    }
}
