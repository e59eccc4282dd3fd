//! Per-edge counters: connections open and total, bytes each way, what the faults did.
//!
//! Plain relaxed atomics bumped by the connection tasks; [`EdgeStats`] is the serialisable copy
//! the BFF shows (`GET /api/chaos`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::fault::Direction;

/// The live counters of one edge.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Connections being proxied now.
    pub open: AtomicU64,
    /// Connections accepted since the proxy started.
    pub total: AtomicU64,
    /// Bytes forwarded client → upstream.
    pub bytes_upstream: AtomicU64,
    /// Bytes forwarded upstream → client.
    pub bytes_downstream: AtomicU64,
    /// New connections closed by a refuse fault.
    pub refused: AtomicU64,
    /// Connections aborted by a reset fault.
    pub resets: AtomicU64,
    /// Connections closed by a cut-after fault.
    pub cuts: AtomicU64,
    /// Faults applied to a scope covering this edge.
    pub faults_applied: AtomicU64,
}

impl Counters {
    /// The byte counter for `flow`.
    pub fn bytes(&self, flow: Direction) -> &AtomicU64 {
        match flow {
            Direction::Downstream => &self.bytes_downstream,
            Direction::Upstream | Direction::Both => &self.bytes_upstream,
        }
    }

    /// Counts a connection as open until the returned guard drops.
    pub fn open_connection(&self) -> OpenGuard<'_> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(&self.open)
    }

    pub fn snapshot(&self) -> EdgeStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        EdgeStats {
            connections_open: get(&self.open),
            connections_total: get(&self.total),
            bytes_upstream: get(&self.bytes_upstream),
            bytes_downstream: get(&self.bytes_downstream),
            refused: get(&self.refused),
            resets: get(&self.resets),
            cuts: get(&self.cuts),
            faults_applied: get(&self.faults_applied),
        }
    }
}

/// Decrements the open-connection count when the connection's task ends, however it ends.
pub(crate) struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A copy of one edge's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EdgeStats {
    /// Connections being proxied now.
    pub connections_open: u64,
    /// Connections accepted since the proxy started.
    pub connections_total: u64,
    /// Bytes forwarded client → upstream.
    pub bytes_upstream: u64,
    /// Bytes forwarded upstream → client.
    pub bytes_downstream: u64,
    /// New connections closed by a refuse fault.
    pub refused: u64,
    /// Connections aborted by a reset fault.
    pub resets: u64,
    /// Connections closed by a cut-after fault.
    pub cuts: u64,
    /// Faults applied to a scope covering this edge.
    pub faults_applied: u64,
}
