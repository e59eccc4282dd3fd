//! Live push: `GET /api/events`, the stream the pages draw from.
//!
//! [`backplane`] carries events between replicas (a Redis stream); [`sse`] streams them to a
//! browser; [`leader`] elects the one replica whose probes and bus tap speak for the cluster,
//! so viewers share one probe set instead of each causing their own; [`tap`] turns the messages
//! on the bus into message-flow and saga events.

pub mod backplane;
pub mod bridge;
pub mod credentials;
pub mod leader;
pub mod sse;
pub mod tap;

use serde::{Deserialize, Serialize};

pub use backplane::{Backplane, BackplaneStatus, Delivered};
pub use leader::Leadership;

/// How the live stream behaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LiveSettings {
    /// How often the leader probes the cluster's health and pushes it.
    pub health_every_ms: u64,
    /// Whether this replica taps the message bus for message-flow and saga events.
    pub tap: bool,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            // Every 2 s: the page's health dots feel live without the probes costing anything
            // noticeable (one `/readyz` per instance per period, whatever the number of viewers).
            health_every_ms: 2_000,
            tap: true,
        }
    }
}
