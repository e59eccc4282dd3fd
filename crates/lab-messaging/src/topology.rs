//! Names and declarations of Lab's RabbitMQ objects (ARCHITECTURE.md §4), all under one prefix.
//!
//! ```text
//! <prefix>lab.events                 topic exchange; routing key = event or command name
//! <prefix>lab.<service>              durable queue bound to what the service consumes;
//!                                    rejected messages dead-letter to ….dead
//! <prefix>lab.<service>.retry.<ms>   one per retry delay: x-message-ttl = ms, then back to
//!                                    lab.<service> through the default exchange
//! <prefix>lab.<service>.dead         messages given up on, for inspection and replay
//! ```
//!
//! Declaring is idempotent, so every (re)connect declares everything again. Retry queues are
//! named by their delay, so changing the delays adds queues instead of failing on a declaration
//! whose arguments differ from the existing queue's.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::{AmqpSettings, MessagingError};

/// How long a single publish may wait for the broker's confirm: a healthy broker confirms in
/// milliseconds (BENCH.md: p99 under 3 ms), so this only trips on a broker that has stalled.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// The names of one service's RabbitMQ objects.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Prepended to every name (`AmqpSettings::prefix`).
    prefix: String,
    /// The consuming service, `catalog`; also the inbox's consumer name.
    service: String,
    /// Delay of each retry queue, in order of attempts.
    retry_delays: Vec<Duration>,
}

impl Topology {
    /// The topology of `service` as configured by `settings`.
    pub fn new(settings: &AmqpSettings, service: &str) -> Self {
        Self {
            prefix: settings.prefix.clone(),
            service: service.to_owned(),
            retry_delays: settings
                .retry_delays_ms
                .iter()
                .map(|ms| Duration::from_millis(*ms))
                .collect(),
        }
    }

    /// The same prefix and retry delays for another service (a producer declaring the queue of
    /// a service it publishes to).
    pub fn of(&self, service: &str) -> Self {
        Self {
            service: service.to_owned(),
            ..self.clone()
        }
    }

    /// The service this topology belongs to.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The topic exchange every event and command is published to.
    pub fn exchange(&self) -> String {
        format!("{}lab.events", self.prefix)
    }

    /// The service's own queue.
    pub fn queue(&self) -> String {
        format!("{}lab.{}", self.prefix, self.service)
    }

    /// The retry queue for the `attempt`-th failure (1-based), if there are that many.
    pub fn retry_queue(&self, attempt: u32) -> Option<String> {
        let index = usize::try_from(attempt).ok()?.checked_sub(1)?;
        let delay = self.retry_delays.get(index)?;
        Some(format!("{}.retry.{}", self.queue(), delay.as_millis()))
    }

    /// How many failed attempts a message gets before it is dead-lettered.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.retry_delays.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
    }

    /// The dead-letter queue.
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.queue())
    }

    /// Declares the exchange (what a publisher needs).
    pub async fn declare_exchange(&self, channel: &Channel) -> Result<(), MessagingError> {
        channel
            .exchange_declare(
                self.exchange().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }

    /// Declares everything the service's consumer needs, binding its queue to `routing_keys`.
    pub async fn declare(
        &self,
        channel: &Channel,
        routing_keys: &[String],
    ) -> Result<(), MessagingError> {
        self.declare_exchange(channel).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.dead_queue().into(), durable, FieldTable::default())
            .await?;
        let mut main_args = FieldTable::default();
        dead_letter_to(&mut main_args, &self.dead_queue());
        channel
            .queue_declare(self.queue().into(), durable, main_args)
            .await?;
        for (i, delay) in self.retry_delays.iter().enumerate() {
            let Some(name) = self.retry_queue(u32::try_from(i + 1).unwrap_or(u32::MAX)) else {
                continue;
            };
            let mut args = FieldTable::default();
            dead_letter_to(&mut args, &self.queue());
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            );
            channel.queue_declare(name.into(), durable, args).await?;
        }
        for key in routing_keys {
            channel
                .queue_bind(
                    self.queue().into(),
                    self.exchange().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes every object of this topology (tests clean up their prefixed names with it).
    pub async fn delete(&self, channel: &Channel) -> Result<(), MessagingError> {
        let mut queues = vec![self.queue(), self.dead_queue()];
        for attempt in 1..self.max_attempts() {
            queues.extend(self.retry_queue(attempt));
        }
        for queue in queues {
            channel
                .queue_delete(queue.into(), Default::default())
                .await?;
        }
        channel
            .exchange_delete(self.exchange().into(), Default::default())
            .await?;
        Ok(())
    }
}

/// Messages that die in the queue with these arguments go to `queue` via the default exchange.
fn dead_letter_to(args: &mut FieldTable, queue: &str) {
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(LongString::from("")),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(LongString::from(queue)),
    );
}

/// A channel in confirm mode: every publish on it is acknowledged by the broker.
pub async fn confirm_channel(broker: &crate::Broker) -> Result<Channel, MessagingError> {
    let conn = broker.connection().map_err(MessagingError::NotConnected)?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes one message and waits (bounded) for the broker to confirm it.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    message_id: uuid::Uuid,
) -> Result<(), MessagingError> {
    let confirm = channel
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(routing_key),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await?;
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| MessagingError::ConfirmTimeout(CONFIRM_TIMEOUT))??;
    if confirmation.is_nack() {
        return Err(MessagingError::Nacked(message_id));
    }
    Ok(())
}
