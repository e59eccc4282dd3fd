//! What the live push stream (`GET /api/events` at the BFF) carries: one envelope, and one kind per
//! thing a viewer watches. Producers anywhere in the cluster write these to the Redis backplane;
//! every BFF replica reads them back and streams them to its viewers, so all viewers of all
//! replicas see the same events with the same ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::SagaTransitioned;

/// One event of the live stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveEvent {
    /// When the producer saw it happen.
    pub at: DateTime<Utc>,
    /// The instance that produced it (`bff-1`, `checkout-1`, …).
    pub source: String,
    /// Set when only one visitor's session may see it (their demo's steps, their keys): the
    /// stream hides it from every other viewer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub body: LiveBody,
}

impl LiveEvent {
    /// An event for every viewer, produced now by `source`.
    pub fn public(source: impl Into<String>, body: LiveBody) -> Self {
        Self {
            at: Utc::now(),
            source: source.into(),
            session: None,
            body,
        }
    }

    /// An event only `session` sees.
    #[must_use]
    pub fn for_session(mut self, session: impl Into<String>) -> Self {
        self.session = Some(session.into());
        self
    }

    /// The kind's name, as SSE `event:` field and topic filter.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

/// The kinds of live event, each with its data. Kinds whose data is owned by one component (the
/// BFF's health report, a breaker's snapshot) carry it as JSON produced by that component's own
/// type, so this crate does not depend on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "kebab-case")]
pub enum LiveBody {
    /// The whole cluster's health (the BFF's `/api/health` report), from one shared probe set.
    Health(serde_json::Value),
    /// Request rates, latencies, errors and 429s.
    Metrics(serde_json::Value),
    /// A line for the console.
    Console(ConsoleLine),
    /// A message crossed the bus (topology edges and the message-flow view are drawn from these).
    Message(MessageSeen),
    /// An order's saga moved.
    Saga(SagaTransitioned),
    /// A circuit breaker changed state or its counters moved.
    Breaker(serde_json::Value),
    /// A rate-limit decision.
    RateLimit(serde_json::Value),
    /// A step of a "Drive it" demo.
    Demo(serde_json::Value),
    /// Chaos state changed (a fault applied, extended, expired or removed).
    Chaos(serde_json::Value),
    /// A service's database credentials changed (leased, swapped, drained, revoked, degraded).
    Vault(serde_json::Value),
}

impl LiveBody {
    /// Every kind's name, in the order the page lists them.
    pub const KINDS: &[&str] = &[
        "health",
        "metrics",
        "console",
        "message",
        "saga",
        "breaker",
        "rate-limit",
        "demo",
        "chaos",
        "vault",
    ];

    /// This kind's name (one of [`LiveBody::KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Health(_) => "health",
            Self::Metrics(_) => "metrics",
            Self::Console(_) => "console",
            Self::Message(_) => "message",
            Self::Saga(_) => "saga",
            Self::Breaker(_) => "breaker",
            Self::RateLimit(_) => "rate-limit",
            Self::Demo(_) => "demo",
            Self::Chaos(_) => "chaos",
            Self::Vault(_) => "vault",
        }
    }

    /// Whether a viewer who connects late wants the latest one of this kind at once (a snapshot
    /// replaces the previous one) rather than only what comes next.
    pub fn is_snapshot(&self) -> bool {
        matches!(self, Self::Health(_) | Self::Metrics(_) | Self::Chaos(_))
    }
}

/// One console line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleLine {
    /// `info`, `warn` or `error`.
    pub level: String,
    /// The line itself; never another visitor's key or token (those go out with a session).
    pub text: String,
}

/// A message seen on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSeen {
    /// Its routing key (`catalog.stock-reserved`).
    pub message_type: String,
    pub message_id: Uuid,
    /// The flow it belongs to (an order's id for the saga).
    pub correlation_id: Uuid,
    /// The service that sent it (the routing key's owner prefix).
    pub from: String,
    /// The services whose queues it goes to (from the subscription table).
    pub to: Vec<String>,
}
