//! The consumer: applies each delivery to the service's database exactly once in effect.
//!
//! For every delivery one transaction holds the inbox row `(consumer, message_id)` (inserted
//! `ON CONFLICT DO NOTHING`: a redelivery finds it and is acked with no effect), the handler's
//! state change and any outbox rows the handler enqueues; the delivery is acked only after that
//! commits. A handler error rolls everything back and the message goes to the next retry queue
//! (attempt count and error in its headers), then after the last one to the dead-letter queue and
//! the `lab_dead_letters` table. A message that is not an [`Envelope`] is dead-lettered at once.
//! When the database is unreachable the delivery is held and retried in place rather than
//! burning its attempts; when the broker goes away the consumer reconnects, re-declares its
//! topology and resumes, and unacked deliveries come back (the inbox absorbs the repeats).
//!
//! Deliveries are applied in *lanes*: each message goes to the lane its correlation id hashes to
//! (one business flow, e.g. an order's saga, always shares a correlation id), and each lane
//! applies its messages in delivery order. So the messages of one flow are applied in the order
//! the broker delivered them — a payment's decline is never applied before the session it
//! declines — while different flows proceed in parallel, as many as there are lanes.
//!
//! A lane that finds several deliveries waiting applies them in one transaction (up to
//! [`ConsumerConfig::batch`]): every inbox row in one statement, each handler in order, one
//! commit, then the acks. Any failure in a batch rolls all of it back and its messages are
//! applied again one at a time, each in its own transaction, so a poison message gets its
//! retries and dead letter alone and the others are applied as usual. Messages whose handler
//! says they are not [`Handler::batchable`] are always applied on their own.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use uuid::Uuid;

use crate::dead_letters::{self, NewDeadLetter};
use crate::topology::{confirm_channel, publish_confirmed};
use crate::{Broker, Envelope, Handler, HandlerError, MessagingError, MessagingMetrics, Topology};

/// Header counting the failed attempts a message has had so far.
pub const ATTEMPTS_HEADER: &str = "x-lab-attempts";
/// Header carrying the last handler error.
pub const ERROR_HEADER: &str = "x-lab-error";

/// Reconnect and database-retry backoff: quick after a blip, at most every 5 s in an outage
/// (a PostgreSQL restart takes well under a second here, RabbitMQ ~10 s).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// A running consumer; stops with the shutdown token it was started with, or [`Consumer::stop`].
pub struct Consumer {
    /// Cancels this consumer only (a child of the application's shutdown token).
    stop: CancellationToken,
    /// Its task, awaited on stop.
    tracker: TaskTracker,
}

/// What the consumer's task works with.
struct Context<H> {
    /// The service's pool: inbox, handler state and outbox share its transactions.
    pool: PgPool,
    /// The process's RabbitMQ connection.
    broker: Broker,
    /// The queues this consumer reads and retries through.
    topology: Topology,
    /// Routing keys bound to the service's queue.
    routing_keys: Vec<String>,
    /// Prefetch and lanes.
    config: ConsumerConfig,
    /// The service's logic.
    handler: H,
    /// Retries, dead letters, duplicates.
    metrics: MessagingMetrics,
}

/// How much a consumer takes on at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Unacked deliveries held at once (AMQP `basic.qos`).
    pub prefetch: u16,
    /// Flows applied in parallel; the messages of one flow (correlation id) are applied in order.
    pub lanes: u16,
    /// Deliveries a lane applies in one transaction at most (1: each on its own).
    pub batch: u16,
}

impl From<&crate::AmqpSettings> for ConsumerConfig {
    fn from(settings: &crate::AmqpSettings) -> Self {
        Self {
            prefetch: settings.prefetch,
            lanes: settings.lanes,
            batch: settings.batch,
        }
    }
}

impl Consumer {
    /// Declares `topology` (binding its queue to `routing_keys`) and consumes from it.
    #[expect(clippy::too_many_arguments, reason = "each is a distinct collaborator")]
    pub fn start<H: Handler>(
        pool: PgPool,
        broker: Broker,
        topology: Topology,
        routing_keys: Vec<String>,
        config: ConsumerConfig,
        handler: H,
        metrics: MessagingMetrics,
        shutdown: &CancellationToken,
    ) -> Self {
        let stop = shutdown.child_token();
        let tracker = TaskTracker::new();
        let context = Arc::new(Context {
            pool,
            broker,
            topology,
            routing_keys,
            config,
            handler,
            metrics,
        });
        tracker.spawn(run(context, stop.clone()));
        tracker.close();
        Self { stop, tracker }
    }

    /// Stops consuming (the delivery in hand is finished or left unacked) and waits.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

async fn run<H: Handler>(context: Arc<Context<H>>, stop: CancellationToken) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let opened = tokio::select! {
            () = stop.cancelled() => return,
            r = open(&context) => r,
        };
        match opened {
            Ok((channel, deliveries)) => {
                backoff = BACKOFF_MIN;
                let reason = consume(&context, &channel, deliveries, &stop).await;
                let _ = channel.close(200, "consumer stopping".into()).await;
                match reason {
                    None => return,
                    Some(reason) => {
                        tracing::warn!(%reason, "consumer lost its channel; reconnecting");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "consumer cannot open its channel yet"),
        }
        if !pause(&stop, backoff).await {
            return;
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One channel's life: hands each delivery to its lane until the channel fails (Some(reason))
/// or the consumer is stopped (None). Returns only after every lane has finished the delivery
/// in hand; deliveries still queued in a lane are dropped unacked, and the broker redelivers them.
async fn consume<H: Handler>(
    context: &Arc<Context<H>>,
    channel: &Channel,
    mut deliveries: lapin::Consumer,
    stop: &CancellationToken,
) -> Option<String> {
    // Cancelled when the consumer stops or any lane finds the channel broken.
    let session = stop.child_token();
    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let lanes = usize::from(context.config.lanes.max(1));
    // A lane never holds more than the broker lets the whole consumer hold.
    let depth = usize::from(context.config.prefetch.max(1));
    let mut senders = Vec::with_capacity(lanes);
    let mut workers = JoinSet::new();
    for _ in 0..lanes {
        let (tx, rx) = mpsc::channel(depth);
        senders.push(tx);
        workers.spawn(lane(
            Arc::clone(context),
            channel.clone(),
            rx,
            session.clone(),
            Arc::clone(&failure),
        ));
    }
    let ended = loop {
        let next = tokio::select! {
            () = session.cancelled() => break None,
            next = deliveries.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Some(e.to_string()),
            None => break Some("the delivery stream ended".to_owned()),
        };
        let envelope = Envelope::from_body(&delivery.data);
        let index = match &envelope {
            Ok(e) => lane_of(e.correlation_id, lanes),
            // Undecodable: any lane will dead-letter it.
            Err(_) => 0,
        };
        // Full lane: wait for it (back-pressure) unless the session ends meanwhile.
        let sent = tokio::select! {
            () = session.cancelled() => break None,
            sent = senders[index].send((delivery, envelope)) => sent,
        };
        if sent.is_err() {
            break None;
        }
    };
    session.cancel();
    drop(senders);
    while workers.join_next().await.is_some() {}
    let failed = failure.lock().ok().and_then(|mut f| f.take());
    failed.or(ended)
}

/// The lane of a flow: its correlation id's random low bits, spread over `lanes`.
fn lane_of(correlation_id: Uuid, lanes: usize) -> usize {
    usize::try_from(correlation_id.as_u128() % lanes as u128).unwrap_or(0)
}

/// A delivery with its body already parsed (to choose its lane).
type Item = (Delivery, Result<Envelope, serde_json::Error>);

/// Applies one lane's deliveries in the order they were handed over, taking what is already
/// waiting (up to the batch size) together.
async fn lane<H: Handler>(
    context: Arc<Context<H>>,
    channel: Channel,
    mut queue: mpsc::Receiver<Item>,
    session: CancellationToken,
    failure: Arc<Mutex<Option<String>>>,
) {
    let most = usize::from(context.config.batch.max(1));
    let mut waiting = Vec::with_capacity(most);
    while let Some(first) = queue.recv().await {
        waiting.push(first);
        while waiting.len() < most {
            match queue.try_recv() {
                Ok(item) => waiting.push(item),
                Err(_) => break,
            }
        }
        if let Err(e) = process_all(&context, &channel, &mut waiting, &session).await {
            if let Ok(mut f) = failure.lock() {
                f.get_or_insert_with(|| e.to_string());
            }
            session.cancel();
            return;
        }
        if session.is_cancelled() {
            return;
        }
    }
}

/// Applies `items` in order: consecutive batchable messages together, any other on its own.
/// Once the session is cancelled the rest are left unacked (the broker redelivers them).
async fn process_all<H: Handler>(
    context: &Context<H>,
    channel: &Channel,
    items: &mut Vec<Item>,
    session: &CancellationToken,
) -> Result<(), MessagingError> {
    let mut run = Vec::with_capacity(items.len());
    for (delivery, envelope) in items.drain(..) {
        match envelope {
            Ok(e) if context.handler.batchable(&e) => run.push((delivery, e)),
            other => {
                process_run(context, channel, &mut run, session).await?;
                if session.is_cancelled() {
                    return Ok(());
                }
                process(context, channel, delivery, other, session).await?;
            }
        }
    }
    process_run(context, channel, &mut run, session).await
}

/// Applies `run` in one transaction when it holds more than one message, else (or when that
/// fails) one at a time. Empties `run`.
async fn process_run<H: Handler>(
    context: &Context<H>,
    channel: &Channel,
    run: &mut Vec<(Delivery, Envelope)>,
    session: &CancellationToken,
) -> Result<(), MessagingError> {
    if run.len() > 1 && !session.is_cancelled() {
        match apply_many(context, run).await {
            Ok(duplicates) => {
                context.metrics.duplicates.inc_by(duplicates);
                let acks = run.drain(..).map(|(delivery, _)| async move {
                    delivery.acker.ack(BasicAckOptions::default()).await
                });
                for acked in join_all(acks).await {
                    acked?;
                }
                return Ok(());
            }
            Err(reason) => tracing::debug!(size = run.len(), %reason,
                "batch rolled back; applying its messages one at a time"),
        }
    }
    for (delivery, envelope) in run.drain(..) {
        if session.is_cancelled() {
            // Left unacked: the broker redelivers them on the next channel.
            break;
        }
        process(context, channel, delivery, Ok(envelope), session).await?;
    }
    Ok(())
}

/// Every message of `run` (different flows, or one flow's in order) applied in one transaction:
/// the inbox rows in one statement, then each new message's handler in order, one commit.
/// Returns how many were duplicates (already in the inbox); on any failure nothing is kept and
/// the reason is returned.
async fn apply_many<H: Handler>(
    context: &Context<H>,
    run: &[(Delivery, Envelope)],
) -> Result<u64, String> {
    let mut tx = lab_db::begin(&context.pool)
        .await
        .map_err(|e| e.to_string())?;
    let ids: Vec<Uuid> = run.iter().map(|(_, e)| e.message_id).collect();
    let fresh: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO lab_inbox (consumer, message_id) SELECT $1, unnest($2::uuid[]) \
         ON CONFLICT DO NOTHING RETURNING message_id",
    )
    .bind(context.topology.service())
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let mut fresh: HashSet<Uuid> = fresh.into_iter().collect();
    let mut duplicates = 0;
    for (delivery, envelope) in run {
        // Removed as it is applied, so a second copy of one message in the batch is a duplicate.
        if !fresh.remove(&envelope.message_id) {
            duplicates += 1;
            continue;
        }
        let span = message_span(envelope, attempts(&delivery.properties));
        context
            .handler
            .handle(&mut tx, envelope)
            .instrument(span)
            .await
            .map_err(|e| format!("message {}: {e}", envelope.message_id))?;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(duplicates)
}

/// The span every log line of a message's handler carries: the message and its trace.
fn message_span(envelope: &Envelope, attempts: u32) -> tracing::Span {
    tracing::info_span!("message", id = %envelope.message_id, kind = %envelope.kind,
        traceparent = %envelope.traceparent, attempt = attempts.saturating_add(1))
}

/// Sleeps `d` unless stopped first; false when stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

async fn open<H: Handler>(
    context: &Context<H>,
) -> Result<(Channel, lapin::Consumer), MessagingError> {
    let channel = confirm_channel(&context.broker).await?;
    context
        .topology
        .declare(&channel, &context.routing_keys)
        .await?;
    channel
        .basic_qos(context.config.prefetch, BasicQosOptions::default())
        .await?;
    let deliveries = channel
        .basic_consume(
            context.topology.queue().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((channel, deliveries))
}

/// How applying a message ended.
enum Applied {
    /// Committed: inbox row and effects.
    Done,
    /// The inbox already had it; nothing changed.
    Duplicate,
}

/// Why applying a message failed.
enum ApplyError {
    /// The handler refused it: retry later, then dead-letter.
    Handler(HandlerError),
    /// The database is unreachable: hold the delivery and try again.
    Database(sqlx::Error),
}

/// Handles one delivery to the end (acked) unless the channel fails (Err) or the consumer is
/// stopped while the database is down (left unacked, so the broker redelivers it). `envelope` is
/// the delivery's body already parsed (to choose its lane).
async fn process<H: Handler>(
    context: &Context<H>,
    channel: &Channel,
    delivery: Delivery,
    envelope: Result<Envelope, serde_json::Error>,
    stop: &CancellationToken,
) -> Result<(), MessagingError> {
    let attempts = attempts(&delivery.properties);
    tracing::debug!(tag = delivery.delivery_tag, attempts, "delivery received");
    let envelope = match envelope {
        Ok(e) => e,
        Err(e) => {
            let dead = NewDeadLetter {
                consumer: context.topology.service().to_owned(),
                message_id: property_id(&delivery.properties).unwrap_or_else(Uuid::now_v7),
                message_type: delivery
                    .properties
                    .kind()
                    .as_ref()
                    .map(|k| k.to_string())
                    .unwrap_or_default(),
                routing_key: delivery.routing_key.to_string(),
                body: delivery.data.clone(),
                error: format!("undecodable message: {e}"),
                attempts,
            };
            if !give_up(context, channel, &delivery, dead, stop).await? {
                return Ok(());
            }
            return ack(&delivery).await;
        }
    };
    let span = message_span(&envelope, attempts);
    let mut backoff = BACKOFF_MIN;
    loop {
        match apply(context, &envelope).instrument(span.clone()).await {
            Ok(Applied::Done) => return ack(&delivery).await,
            Ok(Applied::Duplicate) => {
                context.metrics.duplicates.inc();
                return ack(&delivery).await;
            }
            Err(ApplyError::Handler(e)) => {
                let failed = attempts.saturating_add(1);
                tracing::warn!(message_id = %envelope.message_id, kind = %envelope.kind,
                    attempt = failed, error = %e, "handler failed");
                if let Some(queue) = context.topology.retry_queue(failed) {
                    let properties = with_failure(&delivery.properties, failed, &e.to_string());
                    publish_confirmed(
                        channel,
                        "",
                        &queue,
                        &delivery.data,
                        properties,
                        envelope.message_id,
                    )
                    .await?;
                    context.metrics.retries.inc();
                } else {
                    let dead = NewDeadLetter {
                        consumer: context.topology.service().to_owned(),
                        message_id: envelope.message_id,
                        message_type: envelope.kind.clone(),
                        routing_key: envelope.kind.clone(),
                        body: delivery.data.clone(),
                        error: e.to_string(),
                        attempts: failed,
                    };
                    if !give_up(context, channel, &delivery, dead, stop).await? {
                        return Ok(());
                    }
                }
                return ack(&delivery).await;
            }
            Err(ApplyError::Database(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "database unavailable; holding the delivery");
                if !pause(stop, backoff).await {
                    return Ok(());
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Inbox row, handler, commit: all or nothing.
async fn apply<H: Handler>(
    context: &Context<H>,
    envelope: &Envelope,
) -> Result<Applied, ApplyError> {
    let mut tx = lab_db::begin(&context.pool)
        .await
        .map_err(ApplyError::Database)?;
    let inserted = sqlx::query(
        "INSERT INTO lab_inbox (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(context.topology.service())
    .bind(envelope.message_id)
    .execute(&mut *tx)
    .await
    .map_err(ApplyError::Database)?
    .rows_affected();
    if inserted == 0 {
        return Ok(Applied::Duplicate);
    }
    if let Err(e) = context.handler.handle(&mut tx, envelope).await {
        drop(tx);
        // A handler error caused by the database going away is an outage, not a bad message:
        // it must not use up the message's attempts.
        return Err(match sqlx::query("SELECT 1").execute(&context.pool).await {
            Ok(_) => ApplyError::Handler(e),
            Err(db) => ApplyError::Database(db),
        });
    }
    tx.commit().await.map_err(ApplyError::Database)?;
    Ok(Applied::Done)
}

/// Records the dead letter (holding on while the database is down), then parks the message in
/// the dead-letter queue. False when stopped before it could be recorded.
async fn give_up<H: Handler>(
    context: &Context<H>,
    channel: &Channel,
    delivery: &Delivery,
    dead: NewDeadLetter,
    stop: &CancellationToken,
) -> Result<bool, MessagingError> {
    let mut backoff = BACKOFF_MIN;
    while let Err(e) = dead_letters::record(&context.pool, &dead).await {
        tracing::warn!(error = %e, "cannot record a dead letter yet");
        if !pause(stop, backoff).await {
            return Ok(false);
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    let properties = with_failure(&delivery.properties, dead.attempts, &dead.error);
    publish_confirmed(
        channel,
        "",
        &context.topology.dead_queue(),
        &delivery.data,
        properties,
        dead.message_id,
    )
    .await?;
    context.metrics.dead_letters.inc();
    tracing::error!(message_id = %dead.message_id, error = %dead.error, "message dead-lettered");
    Ok(true)
}

async fn ack(delivery: &Delivery) -> Result<(), MessagingError> {
    delivery.acker.ack(BasicAckOptions::default()).await?;
    Ok(())
}

/// Failed attempts so far, from the headers (0 for a first delivery).
fn attempts(properties: &BasicProperties) -> u32 {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(ATTEMPTS_HEADER).cloned());
    match value {
        Some(AMQPValue::LongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => n,
        _ => 0,
    }
}

/// The AMQP `message_id` property as a UUID, if it is one.
fn property_id(properties: &BasicProperties) -> Option<Uuid> {
    properties
        .message_id()
        .as_ref()
        .and_then(|id| Uuid::parse_str(id.as_str()).ok())
}

/// `properties` with the attempt count and error set in the headers.
fn with_failure(properties: &BasicProperties, attempts: u32, error: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        ATTEMPTS_HEADER.into(),
        AMQPValue::LongInt(i32::try_from(attempts).unwrap_or(i32::MAX)),
    );
    headers.insert(
        ERROR_HEADER.into(),
        AMQPValue::LongString(LongString::from(error)),
    );
    properties.clone().with_headers(headers)
}
