//! The BFF's proxy: every public route of ARCHITECTURE.md §9 that a service answers is forwarded
//! to it, bodies streamed both ways, round-robin across the service's replicas, each call
//! through `lab-resilience` (timeouts, retries inside a budget, a breaker per replica that also
//! ejects it). Failed hops become gateway problems from one table; a service's own problem
//! passes through untouched.
//!
//! [`Proxy::breakers`], [`Proxy::reset`] and [`Proxy::subscribe`] are the handles the demos and
//! the live push stream use.

mod forward;
mod front;
mod headers;
mod pool;
mod routes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::routing::{any, get};
use lab_resilience::{
    BreakerPolicy, BreakerSnapshot, BudgetPolicy, CallPolicy, Events, ResilienceEvent, Upstream,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use front::Front;
pub use headers::X_UPSTREAM_INSTANCE_ID;
pub use routes::{ROUTES, Route, Timeouts};

/// How the proxy bounds and protects its calls (`LAB_BFF__PROXY__…`); the defaults are
/// `lab-resilience`'s, whose sources and reasons are in `lab_resilience::policy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxySettings {
    /// One attempt, up to the upstream's response headers.
    pub attempt_timeout_ms: u64,
    /// A whole call, retries included.
    pub total_timeout_ms: u64,
    /// Retries after the first attempt, for requests safe to repeat.
    pub max_retries: u32,
    /// Failures in the window, in percent, that open a replica's breaker.
    pub breaker_failure_ratio_percent: u32,
    /// Calls the window must hold before the ratio counts.
    pub breaker_minimum_throughput: u32,
    /// The breaker's sliding window.
    pub breaker_window_ms: u64,
    /// How long an open breaker stays open before its probe.
    pub breaker_break_ms: u64,
    /// The largest request body forwarded; a larger one is a 413.
    pub body_limit_bytes: u64,
    /// Whether connections are served by lab-http's own HTTP/1 server, bodiless proxied reads
    /// (`GET`/`HEAD`) taking the proxy's fast path (`proxy/front.rs`, ADR 0007), or by hyper
    /// alone; every other request is answered by the router either way.
    pub own_front: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        let call = CallPolicy::default();
        let breaker = BreakerPolicy::default();
        Self {
            attempt_timeout_ms: millis(call.attempt_timeout),
            total_timeout_ms: millis(call.total_timeout),
            max_retries: call.max_retries,
            breaker_failure_ratio_percent: breaker.failure_ratio_percent,
            breaker_minimum_throughput: breaker.minimum_throughput,
            breaker_window_ms: millis(breaker.sampling_window),
            breaker_break_ms: millis(breaker.break_duration),
            // Every body a service takes is a small JSON document or a webhook; 1 MiB is far
            // above them and far below what would let one request hog memory or a connection.
            body_limit_bytes: 1024 * 1024,
            own_front: true,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl ProxySettings {
    fn call_policy(&self) -> CallPolicy {
        CallPolicy {
            attempt_timeout: Duration::from_millis(self.attempt_timeout_ms),
            total_timeout: Duration::from_millis(self.total_timeout_ms),
            max_retries: self.max_retries,
            ..CallPolicy::default()
        }
    }

    fn breaker_policy(&self) -> BreakerPolicy {
        BreakerPolicy {
            failure_ratio_percent: self.breaker_failure_ratio_percent,
            minimum_throughput: self.breaker_minimum_throughput,
            sampling_window: Duration::from_millis(self.breaker_window_ms),
            break_duration: Duration::from_millis(self.breaker_break_ms),
        }
    }
}

/// The proxy; cheap to clone, every clone shares the client pool, breakers and budgets.
#[derive(Clone)]
pub struct Proxy(Arc<Inner>);

struct Inner {
    /// Each endpoint's keep-alive connections.
    pools: pool::Pools,
    /// By service name, looked up on every proxied request: foldhash, the keys are the
    /// settings' own.
    upstreams: HashMap<String, Upstream, foldhash::fast::RandomState>,
    events: Events,
    policy: CallPolicy,
    body_limit: u64,
}

/// The body of `GET /api/breakers`.
#[derive(Debug, Serialize)]
pub struct BreakersReport {
    pub breakers: Vec<BreakerSnapshot>,
}

impl Proxy {
    /// A proxy to `instances` (`(service, base url)`, as `Settings::instances` lists them).
    pub fn new(instances: &[(String, String)], settings: &ProxySettings) -> Self {
        let pools = pool::Pools::new(instances.iter().map(|(_, url)| url.as_str()));
        let events = Events::default();
        let mut urls: HashMap<&str, Vec<String>> = HashMap::new();
        for (service, url) in instances {
            urls.entry(service).or_default().push(url.clone());
        }
        let upstreams = urls
            .into_iter()
            .map(|(service, urls)| {
                let upstream = Upstream::new(
                    service,
                    &urls,
                    settings.breaker_policy(),
                    BudgetPolicy::default(),
                    events.clone(),
                );
                (service.to_owned(), upstream)
            })
            .collect();
        Self(Arc::new(Inner {
            pools,
            upstreams,
            events,
            policy: settings.call_policy(),
            body_limit: settings.body_limit_bytes,
        }))
    }

    /// The proxied routes of §9, and `GET /api/breakers`.
    pub fn router(&self) -> Router {
        let mut router = Router::new().route(
            "/api/breakers",
            get({
                let proxy = self.clone();
                move || async move {
                    axum::Json(BreakersReport {
                        breakers: proxy.breakers(),
                    })
                }
            }),
        );
        for route in ROUTES {
            let proxy = self.clone();
            router = router.route(
                route.public,
                any(move |request: Request| async move {
                    forward::forward(&proxy.0, route, request).await
                }),
            );
        }
        router
    }

    /// Every replica's breaker, by service then configuration order.
    pub fn breakers(&self) -> Vec<BreakerSnapshot> {
        let mut services: Vec<&Upstream> = self.0.upstreams.values().collect();
        services.sort_by(|a, b| a.service.cmp(&b.service));
        services.into_iter().flat_map(Upstream::snapshots).collect()
    }

    /// Closes the breakers of `upstream`: a service name (all its replicas) or one replica's
    /// base URL. False when nothing by that name is proxied.
    pub fn reset(&self, upstream: &str) -> bool {
        if let Some(service) = self.0.upstreams.get(upstream) {
            service.reset();
            return true;
        }
        let mut found = false;
        for breaker in self.0.upstreams.values().flat_map(Upstream::breakers) {
            if &**breaker.endpoint() == upstream.trim_end_matches('/') {
                breaker.reset();
                found = true;
            }
        }
        found
    }

    /// Puts an HTTP-level fault on every replica of `service` for `ttl`; false when `service` is
    /// not proxied.
    pub fn set_fault(
        &self,
        service: &str,
        fault: lab_resilience::HttpFault,
        ttl: Duration,
    ) -> Result<bool, lab_resilience::FaultError> {
        match self.0.upstreams.get(service) {
            Some(upstream) => upstream.fault.set(fault, ttl).map(|()| true),
            None => Ok(false),
        }
    }

    /// Lifts `service`'s fault; false when `service` is not proxied.
    pub fn clear_fault(&self, service: &str) -> bool {
        self.0
            .upstreams
            .get(service)
            .map(|u| u.fault.clear())
            .is_some()
    }

    /// `service`'s fault in force and its time left.
    pub fn fault(&self, service: &str) -> Option<(lab_resilience::HttpFault, Duration)> {
        self.0.upstreams.get(service)?.fault.current()
    }

    /// Breaker changes, retries and fail-fasts as they happen.
    pub fn subscribe(&self) -> broadcast::Receiver<ResilienceEvent> {
        self.0.events.subscribe()
    }
}

#[cfg(test)]
mod tests;
