//! One proxied edge: a listener, its upstream address, and the connections between them.
//!
//! [`Proxy::start`] binds (port 0 allowed; [`Proxy::local_addr`] reports the port) and spawns
//! the accept loop on the proxy's own `TaskTracker`; each accepted connection is a tracked task
//! (see `pipe`). The edge's current faults live in an `ArcSwap` that the chaos registry
//! replaces and connections read, plus a `watch` counter that wakes connections waiting on a
//! change (a blackhole lifted, a reset to roll for).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::effect::EdgeFaults;
use crate::pipe;
use crate::stats::{Counters, EdgeStats};

/// How long [`Proxy::stop`] lets open connections finish on their own before closing them: a
/// service stopping alongside has closed its pool by then.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// After a failed `accept` (out of file descriptors, most likely) the loop waits this long
/// rather than spinning on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What a proxy listens on and forwards to.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The edge's name, unique in a registry: `catalog-1→postgres`.
    pub name: String,
    /// Where clients connect; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where connections are forwarded.
    pub upstream: SocketAddr,
}

/// Why a proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("edge {name}: cannot listen on {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// The state a proxy's connections share with the chaos registry.
#[derive(Debug)]
pub(crate) struct Edge {
    /// The edge's name.
    pub name: String,
    /// The bound listen address.
    pub listen: SocketAddr,
    /// Where connections go.
    pub upstream: SocketAddr,
    /// The faults in force; read per chunk, replaced by the registry.
    pub faults: ArcSwap<EdgeFaults>,
    /// Bumped after each replacement of `faults`, to wake connections waiting for a change.
    pub version: watch::Sender<u64>,
    /// Counters.
    pub counters: Counters,
}

impl Edge {
    /// Puts `faults` in force, waking waiting connections; a no-op when nothing changed.
    pub fn set_faults(&self, faults: EdgeFaults) {
        if **self.faults.load() == faults {
            return;
        }
        self.faults.store(Arc::new(faults));
        self.version.send_modify(|v| *v += 1);
    }
}

/// One listening edge.
pub struct Proxy {
    /// Shared with connections and the registry.
    edge: Arc<Edge>,
    /// Stops the accept loop.
    accept_stop: CancellationToken,
    /// Closes open connections.
    conn_stop: CancellationToken,
    /// The accept loop and every connection.
    tracker: TaskTracker,
}

impl Proxy {
    /// Binds `config.listen` and starts accepting. Everything stops when `shutdown` is cancelled,
    /// when [`Proxy::stop`] is called, or when the `Proxy` is dropped.
    pub async fn start(
        config: ProxyConfig,
        shutdown: &CancellationToken,
    ) -> Result<Self, ProxyError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ProxyError::Bind {
                    name: config.name.clone(),
                    addr: config.listen,
                    source,
                })?;
        let listen = listener.local_addr().map_err(|source| ProxyError::Bind {
            name: config.name.clone(),
            addr: config.listen,
            source,
        })?;
        let edge = Arc::new(Edge {
            name: config.name,
            listen,
            upstream: config.upstream,
            faults: ArcSwap::from_pointee(EdgeFaults::default()),
            version: watch::Sender::new(0),
            counters: Counters::default(),
        });
        let proxy = Proxy {
            edge,
            accept_stop: shutdown.child_token(),
            conn_stop: shutdown.child_token(),
            tracker: TaskTracker::new(),
        };
        proxy.tracker.spawn(accept_loop(
            listener,
            proxy.edge.clone(),
            proxy.accept_stop.clone(),
            proxy.conn_stop.clone(),
            proxy.tracker.clone(),
        ));
        tracing::debug!(edge = %proxy.edge.name, %listen, upstream = %proxy.edge.upstream, "fault proxy listening");
        Ok(proxy)
    }

    /// The edge's name.
    pub fn name(&self) -> &str {
        &self.edge.name
    }

    /// The address clients connect to (the bound port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.edge.listen
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.edge.upstream
    }

    /// A copy of the edge's counters.
    pub fn stats(&self) -> EdgeStats {
        self.edge.counters.snapshot()
    }

    pub(crate) fn edge(&self) -> &Arc<Edge> {
        &self.edge
    }

    /// Stops accepting, gives open connections [`STOP_GRACE`] to end, then closes the rest.
    pub async fn stop(self) {
        self.accept_stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(STOP_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            self.conn_stop.cancel();
            self.tracker.wait().await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_stop.cancel();
        self.conn_stop.cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    edge: Arc<Edge>,
    stop: CancellationToken,
    conn_stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((client, _)) => {
                tracker.spawn(pipe::serve(client, edge.clone(), conn_stop.clone()));
            }
            Err(e) => {
                tracing::warn!(edge = %edge.name, error = %e, "fault proxy accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
