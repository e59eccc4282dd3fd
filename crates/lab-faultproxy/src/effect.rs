//! What the faults active on one edge add up to, as the snapshot its connections read.
//!
//! The chaos registry recomputes an edge's [`EdgeFaults`] whenever a fault covering it comes or
//! goes and publishes it through an `ArcSwap`; a connection loads it once per chunk read, so the
//! no-fault path costs an atomic load and a comparison. Faults of one kind from several scopes
//! (the edge and both its targets) combine as links in series would: latencies add, the
//! narrowest bandwidth and the earliest cut win, a blackhole or refusal anywhere holds.

use std::time::Duration;

use crate::fault::{Direction, Fault, ms};

/// A fault's id in the registry, stable for the fault's life (re-applying keeps it).
pub type FaultId = u64;

/// The faults on one direction of an edge's connections.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Stage {
    /// Added to every chunk's delivery time.
    pub latency: Duration,
    /// Uniform spread around `latency`.
    pub jitter: Duration,
    /// Bytes per second per connection, when capped.
    pub bandwidth: Option<u64>,
    /// Nothing is forwarded while set.
    pub blackhole: bool,
    /// The connection closes once this many bytes have passed this way.
    pub cut_after: Option<u64>,
}

impl Stage {
    /// Whether chunks pass untouched (the hot path).
    pub fn is_clean(&self) -> bool {
        *self == Stage::default()
    }
}

/// Everything a connection on one edge needs to know about the faults covering it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EdgeFaults {
    /// Client → upstream.
    pub upstream: Stage,
    /// Upstream → client.
    pub downstream: Stage,
    /// New connections are closed at once.
    pub refuse: bool,
    /// How long a FIN is held before it is forwarded.
    pub slow_close: Duration,
    /// Active reset faults: each connection rolls once per id against its probability.
    pub resets: Vec<(FaultId, f64)>,
}

impl EdgeFaults {
    /// Combines `faults` (those whose scope covers the edge).
    pub fn compose<'a>(faults: impl IntoIterator<Item = (FaultId, &'a Fault)>) -> Self {
        let mut out = EdgeFaults::default();
        for (id, fault) in faults {
            match *fault {
                Fault::Latency {
                    ms: mean,
                    jitter_ms,
                    direction,
                } => out.each(direction, |s| {
                    s.latency += ms(mean);
                    s.jitter += ms(jitter_ms);
                }),
                Fault::Bandwidth {
                    bytes_per_s,
                    direction,
                } => out.each(direction, |s| {
                    s.bandwidth = Some(s.bandwidth.map_or(bytes_per_s, |b| b.min(bytes_per_s)));
                }),
                Fault::Blackhole { direction } => out.each(direction, |s| s.blackhole = true),
                Fault::CutAfter { bytes, direction } => out.each(direction, |s| {
                    s.cut_after = Some(s.cut_after.map_or(bytes, |c| c.min(bytes)));
                }),
                Fault::Reset { probability } => out.resets.push((id, probability)),
                Fault::Refuse => out.refuse = true,
                Fault::SlowClose { delay_ms } => out.slow_close = out.slow_close.max(ms(delay_ms)),
            }
        }
        out
    }

    /// The stage for bytes flowing `flow` (`Upstream` or `Downstream`).
    pub fn stage(&self, flow: Direction) -> Stage {
        match flow {
            Direction::Downstream => self.downstream,
            Direction::Upstream | Direction::Both => self.upstream,
        }
    }

    fn each(&mut self, direction: Direction, mut f: impl FnMut(&mut Stage)) {
        if direction.covers(Direction::Upstream) {
            f(&mut self.upstream);
        }
        if direction.covers(Direction::Downstream) {
            f(&mut self.downstream);
        }
    }
}
