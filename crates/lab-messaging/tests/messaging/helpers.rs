//! One test's messaging world: a database schema with the messaging tables and an `effects`
//! table the handlers write to, a broker connection, and this test's topology.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use lab_messaging::lapin::options::{
    BasicGetOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Queue};
use lab_messaging::{
    AmqpSettings, Broker, Consumer, Envelope, Handler, HandlerError, MessagingMetrics, Relay,
    RelayConfig, Topology, outbox,
};
use lab_test_support::{TestEnv, eventually};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Deadline for anything a test waits on: local broker and database answer in milliseconds, the
/// retry tests wait out a few short TTLs; this only trips on a real failure.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The routing key every test event uses.
pub const EVENT: &str = "test.something-happened";

/// The schema (and login) the tests use; any service's works.
const SCHEMA: &str = "payments";

pub struct World {
    /// Kept alive for the test's database and shutdown token.
    pub env: TestEnv,
    /// The service's pool: outbox, inbox, dead letters, effects.
    pub pool: PgPool,
    /// RabbitMQ settings with this test's prefix and short retry delays.
    pub settings: AmqpSettings,
    /// The process's broker connection.
    pub broker: Broker,
    /// This test's topology (service `payments`).
    pub topology: Topology,
}

pub async fn world() -> World {
    let env = TestEnv::builder().with_database(&[]).start().await;
    let pool = lab_db::connect(&env.database(SCHEMA), SCHEMA, "messaging-test", "-")
        .await
        .expect("test database");
    lab_messaging::migrate(&pool).await.expect("migrations");
    sqlx::query(
        "CREATE TABLE effects (id BIGSERIAL PRIMARY KEY, message_id UUID NOT NULL, kind TEXT NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("effects table");
    let settings = AmqpSettings {
        // Short TTLs so a message goes through every retry queue within a second.
        retry_delays_ms: vec![100, 200],
        ..env.amqp()
    };
    let broker = connected_broker(&env, &settings).await;
    let topology = Topology::new(&settings, SCHEMA);
    World {
        env,
        pool,
        settings,
        broker,
        topology,
    }
}

/// A broker connection that is up.
pub async fn connected_broker(env: &TestEnv, settings: &AmqpSettings) -> Broker {
    let broker = Broker::start(settings, "messaging-test", env.shutdown_token());
    let up = eventually(DEADLINE, || {
        let b = broker.clone();
        async move { b.connection().ok() }
    })
    .await;
    assert!(up.is_some(), "RabbitMQ at {:?} not reachable", settings.url);
    broker
}

impl World {
    /// A relay on this world's outbox with its own metrics.
    pub fn relay(&self, broker: &Broker) -> (Relay, MessagingMetrics) {
        self.relay_declaring(broker, Vec::new())
    }

    /// A relay that declares `consumers`' queues (service, routing keys) before publishing.
    pub fn relay_declaring(
        &self,
        broker: &Broker,
        consumers: Vec<(String, Vec<String>)>,
    ) -> (Relay, MessagingMetrics) {
        let metrics = MessagingMetrics::default();
        let relay = Relay::start(
            self.pool.clone(),
            broker.clone(),
            self.topology.clone(),
            RelayConfig {
                batch_size: 100,
                consumers,
                ..RelayConfig::default()
            },
            metrics.clone(),
            &self.env.shutdown_token(),
        );
        (relay, metrics)
    }

    /// A consumer of [`EVENT`] running `handler`, started once its queue is declared.
    pub async fn consumer<H: Handler>(&self, handler: H) -> (Consumer, MessagingMetrics) {
        let metrics = MessagingMetrics::default();
        let consumer = Consumer::start(
            self.pool.clone(),
            self.broker.clone(),
            self.topology.clone(),
            vec![EVENT.to_owned()],
            (&self.settings).into(),
            handler,
            metrics.clone(),
            &self.env.shutdown_token(),
        );
        // Consuming means declared and bound: only then does a published event reach it.
        let queue = self.topology.queue();
        let consuming = eventually(DEADLINE, || {
            let queue = queue.clone();
            async move {
                let q = passive_declare(&self.channel().await, &queue).await?;
                (q.consumer_count() > 0).then_some(())
            }
        })
        .await;
        assert!(consuming.is_some(), "the consumer never started on {queue}");
        (consumer, metrics)
    }

    /// A plain channel on the test's broker (waiting for it to reconnect if need be).
    pub async fn channel(&self) -> Channel {
        let channel = eventually(DEADLINE, || async {
            self.broker.connection().ok()?.create_channel().await.ok()
        })
        .await;
        channel.expect("no channel on the test's broker")
    }

    /// Commits `n` events, one transaction each, and returns their ids in order.
    pub async fn commit_events(&self, n: usize) -> Vec<Uuid> {
        let mut ids = Vec::with_capacity(n);
        for i in 0..n {
            let event = Envelope::new(EVENT, serde_json::json!({ "n": i }));
            let mut tx = lab_db::begin(&self.pool).await.expect("begin");
            outbox::enqueue(&mut tx, &event).await.expect("enqueue");
            tx.commit().await.expect("commit");
            ids.push(event.message_id);
        }
        ids
    }

    /// How often each message id was applied by a handler.
    pub async fn effects(&self) -> HashMap<Uuid, i64> {
        let rows: Vec<(Uuid, i64)> =
            sqlx::query_as("SELECT message_id, count(*) FROM effects GROUP BY message_id")
                .fetch_all(&self.pool)
                .await
                .expect("effects");
        rows.into_iter().collect()
    }

    /// Waits until `ids` have all been applied; returns the effects then.
    pub async fn wait_for_effects(&self, ids: &[Uuid]) -> HashMap<Uuid, i64> {
        let all = eventually(DEADLINE, || async {
            let effects = self.effects().await;
            ids.iter()
                .all(|id| effects.contains_key(id))
                .then_some(effects)
        })
        .await;
        all.unwrap_or_else(|| panic!("not every event was applied within {DEADLINE:?}"))
    }

    /// Waits until the outbox has nothing pending.
    pub async fn wait_for_drained_outbox(&self) {
        let drained = eventually(DEADLINE, || async {
            let status = outbox::status(&self.pool).await.ok()?;
            (status.pending == 0).then_some(())
        })
        .await;
        assert!(drained.is_some(), "the outbox did not drain");
    }

    /// A queue of the test's own bound to every routing key, to count what reaches the exchange.
    pub async fn tap(&self) -> String {
        let channel = self.channel().await;
        self.topology
            .declare_exchange(&channel)
            .await
            .expect("exchange");
        let queue = format!("{}tap", self.settings.prefix);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("tap queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                self.topology.exchange().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("tap binding");
        queue
    }

    /// Takes every message now in `queue`, as (message id property, headers).
    pub async fn drain_queue(&self, queue: &str) -> Vec<(String, BasicProperties)> {
        let channel = self.channel().await;
        let mut got = Vec::new();
        while let Ok(Some(m)) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
        {
            let id = m
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            got.push((id, m.delivery.properties.clone()));
        }
        got
    }

    /// Publishes raw bytes to the exchange, as a foreign or broken producer would.
    pub async fn publish_raw(&self, body: &[u8], properties: BasicProperties) {
        let channel = self.channel().await;
        channel
            .basic_publish(
                self.topology.exchange().into(),
                EVENT.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
    }
}

impl Drop for World {
    /// Deletes the test's queues and exchange, whether it passed or panicked (best effort), so
    /// durable test queues do not pile up on the shared broker. Drop cannot await inside the
    /// test's runtime; a short-lived thread with its own runtime does the work.
    fn drop(&mut self) {
        let url = self.settings.url.expose().to_owned();
        let topology = self.topology.clone();
        let tap = format!("{}tap", self.settings.prefix);
        let cleaner = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let properties = ConnectionProperties::default();
                let Ok(conn) = Connection::connect(&url, properties).await else {
                    return;
                };
                if let Ok(channel) = conn.create_channel().await {
                    let _ = topology.delete(&channel).await;
                }
                if let Ok(channel) = conn.create_channel().await {
                    let _ = channel.queue_delete(tap.into(), Default::default()).await;
                }
                let _ = conn.close(200, "test cleanup".into()).await;
            });
        });
        let _ = cleaner.join();
    }
}

/// Messages now in `queue`, or `None` while it does not exist.
pub async fn queue_len(channel: &Channel, queue: &str) -> Option<u32> {
    passive_declare(channel, queue)
        .await
        .map(|q| q.message_count())
}

/// The queue's counts, or `None` while it does not exist.
async fn passive_declare(channel: &Channel, queue: &str) -> Option<Queue> {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .ok()
}

/// Applies each message by inserting an effect row; a second application would show as a
/// second row, so tests can count effects per message id.
pub struct Recorder;

impl Handler for Recorder {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        sqlx::query("INSERT INTO effects (message_id, kind) VALUES ($1, $2)")
            .bind(message.message_id)
            .bind(&message.kind)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

/// Writes its effect, then fails while `failing` is set (so the effect must roll back); counts
/// its calls.
#[derive(Clone, Default)]
pub struct Flaky {
    /// Whether the handler fails.
    pub failing: Arc<AtomicBool>,
    /// How often it was called.
    pub calls: Arc<AtomicU32>,
}

impl Handler for Flaky {
    async fn handle(&self, tx: &mut PgConnection, message: &Envelope) -> Result<(), HandlerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Recorder.handle(tx, message).await?;
        if self.failing.load(Ordering::SeqCst) {
            return Err(HandlerError::new("boom: the payment provider is on fire"));
        }
        Ok(())
    }
}
