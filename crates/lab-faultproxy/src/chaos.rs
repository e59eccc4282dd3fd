//! The chaos registry: every edge's proxy, grouped by target, and the faults in force.
//!
//! A fault is applied to a [`Scope`] — one edge (`catalog-1→postgres`) or a whole target (every
//! edge that lists `postgres` or `catalog-1` among its targets) — for a bounded time (visitors
//! at most [`VISITOR_MAX_TTL`], the admin longer). Re-applying the same kind to the same scope
//! updates its parameters and extends it, keeping its id. A background task removes faults as
//! they expire; every change is recomposed into each affected edge's snapshot (see `effect`) and
//! announced on a broadcast channel for the /chaos page. The state is plain data behind a
//! `std` mutex that is never held across an `.await`.

mod model;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::effect::{EdgeFaults, FaultId};
use crate::fault::Fault;
use crate::proxy::{Edge, Proxy};

pub use model::{
    ADMIN_MAX_TTL, ActiveFault, ChaosError, ChaosEvent, ChaosState, EdgeView, Removal, Requester,
    Scope, VISITOR_MAX_TTL,
};

/// Events buffered for a slow /chaos subscriber before it starts missing some (it then reloads
/// the state); changes come at human speed, so this is minutes of history.
const EVENT_BUFFER: usize = 256;

/// The registry; cheap to clone.
#[derive(Clone)]
pub struct Chaos(Arc<Shared>);

struct Shared {
    /// Edges and faults.
    state: Mutex<State>,
    /// Every change.
    events: broadcast::Sender<ChaosEvent>,
    /// Wakes the expiry task when the earliest expiry may have moved.
    expiry_changed: Notify,
}

#[derive(Default)]
struct State {
    /// By edge name.
    edges: BTreeMap<String, Registered>,
    /// By id; ids only grow, so this is also application order.
    faults: BTreeMap<FaultId, Active>,
    /// The last id handed out.
    next_id: FaultId,
}

struct Registered {
    /// The proxy's shared state.
    edge: Arc<Edge>,
    /// The targets this edge belongs to: `["catalog-1", "postgres"]`.
    targets: Vec<String>,
}

struct Active {
    /// Where it applies.
    scope: Scope,
    /// What it does (validated).
    fault: Fault,
    /// Who applied it last.
    requester: Requester,
    /// When the expiry task removes it.
    expires_at: Instant,
}

impl Chaos {
    /// An empty registry whose expiry task runs on `tracker` until `shutdown`.
    pub fn start(tracker: &TaskTracker, shutdown: CancellationToken) -> Self {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let chaos = Chaos(Arc::new(Shared {
            state: Mutex::new(State::default()),
            events,
            expiry_changed: Notify::new(),
        }));
        tracker.spawn(expire(chaos.clone(), shutdown));
        chaos
    }

    /// Every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ChaosEvent> {
        self.0.events.subscribe()
    }

    /// Registers `proxy`'s edge under `targets`; faults already on those targets apply at once.
    pub fn add_edge<T: Into<String>>(
        &self,
        proxy: &Proxy,
        targets: impl IntoIterator<Item = T>,
    ) -> Result<(), ChaosError> {
        let mut state = self.lock();
        let name = proxy.name().to_owned();
        if state.edges.contains_key(&name) {
            return Err(ChaosError::DuplicateEdge(name));
        }
        let registered = Registered {
            edge: proxy.edge().clone(),
            targets: targets.into_iter().map(Into::into).collect(),
        };
        state.edges.insert(name.clone(), registered);
        state.recompose();
        self.emit(ChaosEvent::EdgeAdded { edge: name });
        Ok(())
    }

    /// Forgets an edge (its proxy keeps running with no faults).
    pub fn remove_edge(&self, name: &str) {
        let mut state = self.lock();
        if let Some(registered) = state.edges.remove(name) {
            registered.edge.set_faults(EdgeFaults::default());
            self.emit(ChaosEvent::EdgeRemoved {
                edge: name.to_owned(),
            });
        }
    }

    /// Applies `fault` to `scope` for `ttl`, or updates and extends the fault of the same kind
    /// already there (same id; the later of both expiries).
    pub fn apply(
        &self,
        scope: Scope,
        fault: Fault,
        ttl: Duration,
        requester: Requester,
    ) -> Result<ActiveFault, ChaosError> {
        fault.validate()?;
        let max = requester.max_ttl();
        if ttl.is_zero() || ttl > max {
            return Err(ChaosError::Expiry { ttl, max });
        }
        let mut state = self.lock();
        let covered = state.edges_covered(&scope);
        if covered.is_empty() {
            return Err(ChaosError::UnknownScope(scope));
        }
        let now = Instant::now();
        let existing = state
            .faults
            .iter()
            .find(|(_, a)| a.scope == scope && a.fault.kind() == fault.kind())
            .map(|(id, _)| *id);
        let (id, extended) =
            match existing.and_then(|id| state.faults.get_mut(&id).map(|a| (id, a))) {
                Some((id, active)) => {
                    active.fault = fault;
                    active.requester = requester;
                    active.expires_at = active.expires_at.max(now + ttl);
                    (id, true)
                }
                None => {
                    state.next_id += 1;
                    let id = state.next_id;
                    let active = Active {
                        scope,
                        fault,
                        requester,
                        expires_at: now + ttl,
                    };
                    state.faults.insert(id, active);
                    for name in &covered {
                        if let Some(r) = state.edges.get(name) {
                            r.edge
                                .counters
                                .faults_applied
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    (id, false)
                }
            };
        state.recompose();
        let view = state.view(id, now).ok_or(ChaosError::UnknownFault(id))?;
        drop(state);
        self.0.expiry_changed.notify_one();
        self.emit(if extended {
            ChaosEvent::Extended {
                fault: view.clone(),
            }
        } else {
            ChaosEvent::Applied {
                fault: view.clone(),
            }
        });
        Ok(view)
    }

    /// Hands out a fault id no TCP fault will get, for a fault kept elsewhere (the apphost's
    /// process faults), so every fault of the cluster is named in one id space and
    /// `DELETE /chaos/faults/{id}` needs no layer.
    pub fn reserve_id(&self) -> FaultId {
        let mut state = self.lock();
        state.next_id += 1;
        state.next_id
    }

    /// Removes one fault now.
    pub fn remove(&self, id: FaultId) -> Result<(), ChaosError> {
        let mut state = self.lock();
        if state.faults.remove(&id).is_none() {
            return Err(ChaosError::UnknownFault(id));
        }
        state.recompose();
        self.emit(ChaosEvent::Removed {
            id,
            reason: Removal::Removed,
        });
        Ok(())
    }

    /// Removes every fault; returns how many there were.
    pub fn clear(&self) -> usize {
        let mut state = self.lock();
        let ids: Vec<FaultId> = state.faults.keys().copied().collect();
        state.faults.clear();
        state.recompose();
        for &id in &ids {
            self.emit(ChaosEvent::Removed {
                id,
                reason: Removal::Cleared,
            });
        }
        ids.len()
    }

    /// The active faults, with time left.
    pub fn faults(&self) -> Vec<ActiveFault> {
        let state = self.lock();
        let now = Instant::now();
        state
            .faults
            .keys()
            .filter_map(|&id| state.view(id, now))
            .collect()
    }

    /// Edges, their counters, and the active faults.
    pub fn state(&self) -> ChaosState {
        let state = self.lock();
        let now = Instant::now();
        ChaosState {
            edges: state
                .edges
                .values()
                .map(|r| EdgeView {
                    name: r.edge.name.clone(),
                    listen: r.edge.listen,
                    upstream: r.edge.upstream,
                    targets: r.targets.clone(),
                    stats: r.edge.counters.snapshot(),
                })
                .collect(),
            faults: state
                .faults
                .keys()
                .filter_map(|&id| state.view(id, now))
                .collect(),
        }
    }

    /// Removes expired faults; returns the next expiry, if any fault is left.
    fn expire_now(&self) -> Option<Instant> {
        let mut state = self.lock();
        let now = Instant::now();
        let expired: Vec<FaultId> = state
            .faults
            .iter()
            .filter(|(_, a)| a.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        if !expired.is_empty() {
            state.faults.retain(|_, a| a.expires_at > now);
            state.recompose();
            for id in expired {
                self.emit(ChaosEvent::Removed {
                    id,
                    reason: Removal::Expired,
                });
            }
        }
        state.faults.values().map(|a| a.expires_at).min()
    }

    fn emit(&self, event: ChaosEvent) {
        // No subscriber is not an error: nobody has the /chaos page open.
        let _ = self.0.events.send(event);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (each change is recomposed as a whole).
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    /// The names of the edges `scope` covers.
    fn edges_covered(&self, scope: &Scope) -> Vec<String> {
        self.edges
            .iter()
            .filter(|(name, r)| covers(scope, name, &r.targets))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Puts each edge's composed faults in force.
    fn recompose(&self) {
        for (name, r) in &self.edges {
            let faults = self
                .faults
                .iter()
                .filter(|(_, a)| covers(&a.scope, name, &r.targets))
                .map(|(id, a)| (*id, &a.fault));
            r.edge.set_faults(EdgeFaults::compose(faults));
        }
    }

    fn view(&self, id: FaultId, now: Instant) -> Option<ActiveFault> {
        let active = self.faults.get(&id)?;
        let left = active.expires_at.saturating_duration_since(now);
        Some(ActiveFault {
            id,
            scope: active.scope.clone(),
            fault: active.fault.clone(),
            requester: active.requester,
            expires_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
            edges: self.edges_covered(&active.scope),
        })
    }
}

fn covers(scope: &Scope, edge: &str, targets: &[String]) -> bool {
    match scope {
        Scope::Edge(name) => name == edge,
        Scope::Target(target) => targets.iter().any(|t| t == target),
    }
}

/// Removes faults as they expire, until `shutdown`.
async fn expire(chaos: Chaos, shutdown: CancellationToken) {
    loop {
        let next = chaos.expire_now();
        let until_next = async {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = chaos.0.expiry_changed.notified() => {}
            () = until_next => {}
        }
    }
}
