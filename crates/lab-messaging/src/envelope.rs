//! The envelope every Lab event and command travels in, and its AMQP form.
//!
//! The body is the whole envelope as JSON, so a message is self-describing wherever it ends up
//! (a retry queue, the dead letters, a replay). The AMQP properties repeat the id and type for
//! tools and brokers, and the W3C `traceparent` rides in the headers, where tracing
//! propagators look for it.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `content_type` of every message Lab publishes.
pub const CONTENT_TYPE: &str = "application/json";
/// AMQP header carrying the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// AMQP delivery mode 2: the broker writes the message to disk before confirming it.
const PERSISTENT: u8 = 2;

/// One event or command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Unique per message (UUIDv7, so ids sort by time); consumers dedupe on it.
    pub message_id: Uuid,
    /// Event or command name, also the routing key: `catalog.stock-reserved`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the producer decided this happened.
    pub occurred_at: DateTime<Utc>,
    /// Shared by every message of one business flow (an order's saga).
    pub correlation_id: Uuid,
    /// The message that caused this one, if any.
    pub causation_id: Option<Uuid>,
    /// W3C trace context (`00-<trace id>-<span id>-01`), joining this message to its trace.
    pub traceparent: String,
    /// The event's own data.
    pub payload: serde_json::Value,
}

impl Envelope {
    /// A message that starts a flow: its own correlation id and a fresh trace.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        let message_id = Uuid::now_v7();
        Self {
            message_id,
            kind: kind.into(),
            occurred_at: Utc::now(),
            correlation_id: message_id,
            causation_id: None,
            traceparent: new_traceparent(None),
            payload,
        }
    }

    /// A message caused by `cause`: same correlation id, same trace, a new span.
    pub fn caused_by(kind: impl Into<String>, payload: serde_json::Value, cause: &Self) -> Self {
        Self {
            correlation_id: cause.correlation_id,
            causation_id: Some(cause.message_id),
            traceparent: new_traceparent(trace_id(&cause.traceparent)),
            ..Self::new(kind, payload)
        }
    }

    /// Sets the trace context, e.g. from the incoming HTTP request's `traceparent`.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = traceparent.into();
        self
    }

    /// The AMQP body: the envelope as JSON.
    pub fn to_body(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses a body written by [`Envelope::to_body`].
    pub fn from_body(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }

    /// The AMQP properties of this message: id, type, content type, persistence, correlation,
    /// and `traceparent` in the headers.
    pub fn properties(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        headers.insert(
            TRACEPARENT.into(),
            AMQPValue::LongString(self.traceparent.clone().into()),
        );
        BasicProperties::default()
            .with_message_id(ShortString::from(self.message_id.to_string()))
            .with_type(ShortString::from(self.kind.clone()))
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(PERSISTENT)
            .with_correlation_id(ShortString::from(self.correlation_id.to_string()))
            .with_timestamp(u64::try_from(self.occurred_at.timestamp()).unwrap_or_default())
            .with_headers(headers)
    }
}

/// Properties for a message known only by id and type (a body that does not decode).
pub(crate) fn minimal_properties(message_id: Uuid, kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(ShortString::from(message_id.to_string()))
        .with_type(ShortString::from(kind))
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
}

/// The 32-hex trace id of a `traceparent`, if it is well formed.
fn trace_id(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let (_, trace) = (parts.next()?, parts.next()?);
    (trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit())).then_some(trace)
}

/// `00-<trace>-<span>-01` (version 00, sampled), continuing `trace` or starting a new one.
fn new_traceparent(trace: Option<&str>) -> String {
    let span = Uuid::new_v4().simple().to_string();
    let trace = trace.map_or_else(|| Uuid::new_v4().simple().to_string(), str::to_owned);
    format!("00-{trace}-{}-01", &span[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caused_message_keeps_the_correlation_and_the_trace() {
        let first = Envelope::new("orders.order-placed", serde_json::json!({"order": 1}));

        let next = Envelope::caused_by("checkout.reserve-stock", serde_json::json!({}), &first);

        assert_eq!(next.correlation_id, first.message_id);
        assert_eq!(next.causation_id, Some(first.message_id));
        assert_eq!(trace_id(&next.traceparent), trace_id(&first.traceparent));
        assert_ne!(next.traceparent, first.traceparent);
        assert_eq!(next.message_id.get_version_num(), 7);
    }

    #[test]
    fn the_body_round_trips_and_names_the_type_field_type() {
        let message = Envelope::new("catalog.stock-reserved", serde_json::json!({"q": 2}));

        let body = message.to_body().unwrap();

        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["type"], "catalog.stock-reserved");
        assert_eq!(Envelope::from_body(&body).unwrap(), message);
    }
}
