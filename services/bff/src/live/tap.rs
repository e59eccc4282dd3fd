//! The bus tap: a private, self-deleting queue bound to every routing key of the exchange, whose
//! messages become live `message` events (who sent what to whom, for the topology and
//! message-flow views) and `saga` events (each transition of an order's saga) with a console
//! line. Every replica taps; only the leader pushes, so each message appears once.

use std::time::Duration;

use futures::StreamExt;
use lab_contracts::live::{ConsoleLine, LiveBody, LiveEvent, MessageSeen};
use lab_contracts::{Message, SagaTransitioned};
use lab_messaging::lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lab_messaging::lapin::types::FieldTable;
use lab_messaging::{AmqpSettings, Broker, Envelope, Topology};
use tokio_util::sync::CancellationToken;

use super::{Backplane, Leadership};

/// Retry period while RabbitMQ is away or the tap's channel broke.
const RECONNECT: Duration = Duration::from_secs(1);

/// Taps the exchange as `instance_id` until `shutdown`.
pub async fn run(
    broker: Broker,
    settings: AmqpSettings,
    instance_id: String,
    backplane: Backplane,
    leadership: Leadership,
    shutdown: CancellationToken,
) {
    let topology = Topology::new(&settings, "bff");
    let queue = format!("{}bff.tap.{instance_id}", settings.prefix);
    loop {
        let result = tokio::select! {
            () = shutdown.cancelled() => return,
            r = tap_once(&broker, &topology, &queue, &instance_id, &backplane, &leadership) => r,
        };
        if let Err(e) = result {
            tracing::debug!(error = %e, "bus tap interrupted; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}

async fn tap_once(
    broker: &Broker,
    topology: &Topology,
    queue: &str,
    instance_id: &str,
    backplane: &Backplane,
    leadership: &Leadership,
) -> Result<(), String> {
    let connection = broker.connection()?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    topology
        .declare_exchange(&channel)
        .await
        .map_err(|e| e.to_string())?;
    // Exclusive and auto-deleted: the tap's queue goes away with its connection, and holds
    // only what arrives while this replica watches.
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    channel
        .queue_bind(
            queue.into(),
            topology.exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let mut deliveries = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery.map_err(|e| e.to_string())?;
        if !leadership.is_leader() {
            continue;
        }
        let Ok(envelope) = Envelope::from_body(&delivery.data) else {
            continue;
        };
        for event in events_of(&envelope, instance_id) {
            backplane.publish(event);
        }
    }
    Err("the tap's delivery stream ended".into())
}

/// The live events one message on the bus makes.
fn events_of(envelope: &Envelope, instance_id: &str) -> Vec<LiveEvent> {
    let from = envelope
        .kind
        .split_once('.')
        .map_or("unknown", |(owner, _)| owner)
        .to_owned();
    let mut events = vec![LiveEvent::public(
        instance_id,
        LiveBody::Message(MessageSeen {
            message_type: envelope.kind.clone(),
            message_id: envelope.message_id,
            correlation_id: envelope.correlation_id,
            from,
            to: lab_contracts::consumers_of(&envelope.kind)
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }),
    )];
    if envelope.kind == SagaTransitioned::NAME
        && let Ok(step) = serde_json::from_value::<SagaTransitioned>(envelope.payload.clone())
    {
        let mut text = format!(
            "order {}: {} → {} on {}",
            step.order_id,
            if step.from.is_empty() {
                "∅"
            } else {
                &step.from
            },
            step.to,
            step.event
        );
        if !step.compensations.is_empty() {
            text.push_str(&format!(
                " (compensating: {})",
                step.compensations.join(", ")
            ));
        }
        events.push(LiveEvent::public(
            instance_id,
            LiveBody::Console(ConsoleLine {
                level: if step.compensations.is_empty() {
                    "info"
                } else {
                    "warn"
                }
                .into(),
                text,
            }),
        ));
        events.push(LiveEvent::public(instance_id, LiveBody::Saga(step)));
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_transition_makes_a_message_a_console_line_and_a_saga_event() {
        let order_id = uuid::Uuid::now_v7();
        let step = SagaTransitioned {
            order_id,
            from: "PaymentSessionCreated".into(),
            to: "Cancelled".into(),
            event: "payments.payment-declined".into(),
            terminal: true,
            compensations: vec!["ReleaseStock".into()],
        };
        let envelope = Envelope::new(SagaTransitioned::NAME, serde_json::to_value(&step).unwrap());

        let events = events_of(&envelope, "bff-1");

        let kinds: Vec<&str> = events.iter().map(LiveEvent::kind).collect();
        assert_eq!(kinds, ["message", "console", "saga"]);
        let LiveBody::Message(seen) = &events[0].body else {
            panic!("not a message event")
        };
        assert_eq!(seen.from, "checkout");
        assert_eq!(seen.to, ["orders"]);
        let LiveBody::Console(line) = &events[1].body else {
            panic!("not a console line")
        };
        assert_eq!(line.level, "warn");
        assert!(
            line.text.contains("compensating: ReleaseStock"),
            "{}",
            line.text
        );
        assert_eq!(events[2].body, LiveBody::Saga(step));
    }
}
