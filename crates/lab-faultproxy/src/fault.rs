//! The faults a proxy can inject, as a typed enum whose parameters are checked on the way in.
//!
//! The model follows Toxiproxy's toxics (a kind, a stream direction, a probability where one
//! makes sense) but keeps to what Lab's chaos page offers: latency with jitter, a bandwidth cap,
//! connection resets, a blackhole, refused connections, a slow close and a cut after N bytes.
//! [`Fault::validate`] bounds every parameter, so a fault that passed it cannot wedge a proxy
//! (a 10-hour latency) or mean nothing (a probability of 3); its [`FaultError`] is what the BFF
//! turns into a 422.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A latency above this is an outage, not a slow network; the blackhole fault models outages.
pub const MAX_LATENCY_MS: u64 = 10_000;
/// Below 1 KiB/s nothing useful passes (a PostgreSQL start-up packet takes seconds), which is a
/// blackhole by another name.
pub const MIN_BANDWIDTH_BYTES_PER_S: u64 = 1_024;
/// A FIN held longer than this is a blackhole on close; clients' own close timeouts are shorter.
pub const MAX_SLOW_CLOSE_MS: u64 = 30_000;

/// Which way the bytes flow that a fault acts on, named as Toxiproxy names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the client (a service) to the upstream (PostgreSQL, Redis, …): requests.
    Upstream,
    /// From the upstream back to the client: responses.
    Downstream,
    /// Both ways.
    #[default]
    Both,
}

impl Direction {
    /// Whether a fault set for `self` acts on bytes flowing `flow` (`Upstream` or `Downstream`).
    pub fn covers(self, flow: Direction) -> bool {
        self == Direction::Both || self == flow
    }
}

/// One fault, with its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown fields are refused, so a misspelt `jiter_ms` is a 422 rather than a silent default.
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// Every chunk is held `ms` ± `jitter_ms` after it was read, in order (never reordered).
    Latency {
        /// The mean delay per chunk.
        ms: u64,
        /// Uniform spread around `ms`; at most `ms`, so no chunk is delayed by less than zero.
        #[serde(default)]
        jitter_ms: u64,
        /// Which way chunks are delayed.
        #[serde(default)]
        direction: Direction,
    },
    /// Bytes are paced to at most `bytes_per_s` per connection and direction.
    Bandwidth {
        /// The cap.
        bytes_per_s: u64,
        /// Which way the cap applies.
        #[serde(default)]
        direction: Direction,
    },
    /// Connections are aborted with a TCP RST (`SO_LINGER` 0): a new one with this probability
    /// at accept, and each live one once, with this probability, when the fault is applied.
    Reset {
        /// 0 (never) to 1 (always).
        probability: f64,
    },
    /// Connections are accepted and kept, but nothing is forwarded (bytes wait, as a partitioned
    /// TCP peer's retransmissions would, and flow again when the fault is lifted).
    Blackhole {
        /// Which way nothing passes.
        #[serde(default)]
        direction: Direction,
    },
    /// New connections are accepted and closed at once; existing ones are not touched.
    Refuse,
    /// The FIN that ends a direction is forwarded `delay_ms` late.
    SlowClose {
        /// How long the close is held.
        delay_ms: u64,
    },
    /// After `bytes` have passed in a direction on a connection, the connection is closed.
    CutAfter {
        /// How many bytes pass before the cut; counted from the connection's start.
        bytes: u64,
        /// Which way the bytes are counted.
        #[serde(default)]
        direction: Direction,
    },
}

/// A fault's kind without its parameters: re-applying the same kind to the same scope extends
/// the fault already there instead of adding a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    Latency,
    Bandwidth,
    Reset,
    Blackhole,
    Refuse,
    SlowClose,
    CutAfter,
}

/// Why a fault's parameters were refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    #[error("latency must be at most {MAX_LATENCY_MS} ms, not {0} ms")]
    LatencyTooLong(u64),
    #[error("jitter ({jitter_ms} ms) must not exceed the latency ({ms} ms)")]
    JitterAboveLatency { ms: u64, jitter_ms: u64 },
    #[error("bandwidth must be at least {MIN_BANDWIDTH_BYTES_PER_S} bytes/s, not {0}")]
    BandwidthTooLow(u64),
    #[error("probability must be between 0 and 1, not {0}")]
    ProbabilityOutOfRange(f64),
    #[error("slow close must be at most {MAX_SLOW_CLOSE_MS} ms, not {0} ms")]
    SlowCloseTooLong(u64),
    #[error("cut after must be at least 1 byte")]
    CutAfterZero,
}

impl Fault {
    /// The fault's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Latency { .. } => FaultKind::Latency,
            Fault::Bandwidth { .. } => FaultKind::Bandwidth,
            Fault::Reset { .. } => FaultKind::Reset,
            Fault::Blackhole { .. } => FaultKind::Blackhole,
            Fault::Refuse => FaultKind::Refuse,
            Fault::SlowClose { .. } => FaultKind::SlowClose,
            Fault::CutAfter { .. } => FaultKind::CutAfter,
        }
    }

    /// Checks every parameter against its bound.
    pub fn validate(&self) -> Result<(), FaultError> {
        match *self {
            Fault::Latency { ms, jitter_ms, .. } => {
                if ms > MAX_LATENCY_MS {
                    return Err(FaultError::LatencyTooLong(ms));
                }
                if jitter_ms > ms {
                    return Err(FaultError::JitterAboveLatency { ms, jitter_ms });
                }
            }
            Fault::Bandwidth { bytes_per_s, .. } => {
                if bytes_per_s < MIN_BANDWIDTH_BYTES_PER_S {
                    return Err(FaultError::BandwidthTooLow(bytes_per_s));
                }
            }
            Fault::Reset { probability } => {
                // `contains` is false for NaN, which is what a NaN should get.
                if !(0.0..=1.0).contains(&probability) {
                    return Err(FaultError::ProbabilityOutOfRange(probability));
                }
            }
            Fault::SlowClose { delay_ms } => {
                if delay_ms > MAX_SLOW_CLOSE_MS {
                    return Err(FaultError::SlowCloseTooLong(delay_ms));
                }
            }
            Fault::CutAfter { bytes, .. } => {
                if bytes == 0 {
                    return Err(FaultError::CutAfterZero);
                }
            }
            Fault::Blackhole { .. } | Fault::Refuse => {}
        }
        Ok(())
    }
}

/// Milliseconds as a `Duration`.
pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}
