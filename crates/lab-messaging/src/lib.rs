//! RabbitMQ and the transactional outbox for Lab services (ARCHITECTURE.md §4).
//!
//! - [`Broker`] keeps one AMQP connection per process alive; [`AmqpProbe`] checks it.
//! - [`Topology`] names and declares the exchange, a service's queue, its retry queues and its
//!   dead-letter queue, all under [`AmqpSettings::prefix`].
//! - [`Envelope`] is what travels: ids, type, time, correlation, causation, `traceparent`, payload.
//! - [`outbox`] writes messages inside the caller's transaction; [`Relay`] publishes them with
//!   publisher confirms (at-least-once).
//! - [`Consumer`] runs a service's [`Handler`] on each delivery once: inbox row, state change and
//!   outgoing outbox rows in one transaction (effectively-once), with retries through TTL'd
//!   queues and [`dead_letters`] (listed and replayed by operators).
//! - [`admin`]: the operator's routes over the outbox and dead letters, mounted by each service
//!   behind its own admin check.
//! - [`invariants`]: the outbox drains and no message is dead, for each service's `GET /invariants`.
//! - [`MessagingMetrics`]: backlog, commit→publish latency, retries, dead letters, duplicates.
//!
//! The tables live in the calling service's schema; [`migrate`] creates them.

pub mod admin;
mod broker;
pub mod consumer;
pub mod dead_letters;
pub mod envelope;
pub mod handler;
pub mod invariants;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod topology;

use std::sync::LazyLock;

use futures::future::BoxFuture;
use lab_config::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::migrate::Migrator;

pub use broker::Broker;
pub use consumer::{Consumer, ConsumerConfig};
pub use envelope::Envelope;
pub use handler::{Handler, HandlerError};
pub use lapin;
pub use metrics::MessagingMetrics;
pub use relay::{Relay, RelayConfig};
pub use topology::Topology;

/// How a service reaches RabbitMQ and shapes its queues.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: SecretString,
    /// Prepended to every exchange and queue name; empty in production, unique per test so
    /// parallel tests never share a queue.
    pub prefix: String,
    /// Delay before each retry of a failed message, one TTL'd retry queue per entry; after the
    /// last one the message is dead-lettered.
    pub retry_delays_ms: Vec<u64>,
    /// Unacknowledged deliveries a consumer may hold at once.
    pub prefetch: u16,
    /// Flows (correlation ids) a consumer applies in parallel; one flow's messages stay in order.
    pub lanes: u16,
    /// Deliveries a lane may apply in one transaction (those already waiting when it starts
    /// one); 1 applies each on its own.
    pub batch: u16,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: SecretString::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            prefix: String::new(),
            // Growing ×5 (1 s, 5 s, 25 s): a blip is retried at once, a dependency restart
            // (~10 s for RabbitMQ here) is outlasted before the message is given up on.
            retry_delays_ms: vec![1_000, 5_000, 25_000],
            // Enough to keep one sequential handler busy without a consumer hoarding work
            // another replica could take.
            prefetch: 32,
            // Enough transactions in flight for PostgreSQL to group their commits (the consumer's
            // cost is mostly commit latency), while leaving most of a service's pool (10) to
            // its relay and HTTP handlers.
            lanes: 4,
            // A commit (and its WAL flush) and the transaction's round trips shared by up to 16
            // messages, while a batch's transaction stays short: a lane only takes what has
            // already been delivered, so under light load it is one message as before.
            batch: 16,
        }
    }
}

/// Starts a service's outbox relay and its consumer on the service's topology; both run until
/// `shutdown` (their tasks are tracked inside and stop with the token). `subscriptions` is every
/// consuming service with its routing keys (`lab_contracts::all_subscriptions()`): the relay
/// declares all of those queues before it publishes, and `service`'s own entry binds its queue.
#[expect(
    clippy::too_many_arguments,
    reason = "each is a separate dependency of the two loops"
)]
pub fn start_service<H: Handler>(
    service: &str,
    pool: &PgPool,
    broker: &Broker,
    settings: &AmqpSettings,
    subscriptions: Vec<(String, Vec<String>)>,
    handler: H,
    metrics: MessagingMetrics,
    shutdown: &tokio_util::sync::CancellationToken,
) {
    let topology = Topology::new(settings, service);
    let routing_keys = subscriptions
        .iter()
        .find(|(s, _)| s == service)
        .map(|(_, keys)| keys.clone())
        .unwrap_or_default();
    let _relay = Relay::start(
        pool.clone(),
        broker.clone(),
        topology.clone(),
        RelayConfig {
            consumers: subscriptions,
            ..RelayConfig::default()
        },
        metrics.clone(),
        shutdown,
    );
    let _consumer = Consumer::start(
        pool.clone(),
        broker.clone(),
        topology,
        routing_keys,
        settings.into(),
        handler,
        metrics,
        shutdown,
    );
}

/// What went wrong in the messaging layer.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("RabbitMQ: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("RabbitMQ is not connected: {0}")]
    NotConnected(String),
    #[error("RabbitMQ refused message {0} (nack)")]
    Nacked(uuid::Uuid),
    #[error("RabbitMQ did not confirm the publish within {0:?}")]
    ConfirmTimeout(std::time::Duration),
    #[error("messaging migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error("no dead letter with id {0}")]
    NoSuchDeadLetter(i64),
}

/// lab-messaging's own migrations, tracked in `_lab_messaging_migrations` so they never clash
/// with the service's `_sqlx_migrations`. Public so the test harness can put them in a template.
pub static MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.dangerous_set_table_name("_lab_messaging_migrations");
    migrator
});

/// Creates the outbox, inbox, dead-letter and relay-control tables in the pool's schema (its
/// `search_path`). Concurrent replicas serialise on sqlx's advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), MessagingError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Readiness probe: opens a real channel on the live connection and closes it again.
pub struct AmqpProbe(pub Broker);

impl lab_http::Probe for AmqpProbe {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let conn = self.0.connection()?;
            let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
            channel
                .close(200, "probe".into())
                .await
                .map_err(|e| e.to_string())
        })
    }
}
