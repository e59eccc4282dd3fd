//! What each BFF replica itself contributes to the live stream: its breakers' state changes, the
//! replicas they eject from and probe back into the round-robin, and exhausted retry budgets, its rate limiter's refusals (to everybody, without naming the
//! visitor) and the demo bucket's decisions (to that visitor only), and every couple of seconds
//! a metrics snapshot — requests per second, p50/p99, errors, 429s, fail-fasts, retries and each
//! upstream replica's breaker with its counters (the topology's BFF → service edges, from the
//! real traffic).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::Response;
use futures::future::BoxFuture;
use lab_contracts::live::{ConsoleLine, LiveBody, LiveEvent};
use lab_resilience::{BreakerState, ResilienceEvent};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

use super::Backplane;
use crate::proxy::Proxy;
use crate::rate_limit::{RateLimitEvent, RateLimiter};

/// How often a replica pushes its metrics snapshot.
const METRICS_EVERY: Duration = Duration::from_secs(2);
/// Latency samples kept per period; beyond it the window's p99 comes from the first ones (a
/// replica past 25k requests/s has bigger problems than a slightly early p99).
const MAX_SAMPLES: usize = 50_000;

/// Request counters of one metrics period, fed by [`observe`].
#[derive(Default)]
pub struct Traffic {
    /// Latencies (ms) of the period's requests.
    samples: Mutex<Vec<f32>>,
    requests: AtomicU64,
    server_errors: AtomicU64,
    too_many: AtomicU64,
    retries: AtomicU64,
    fail_fast: AtomicU64,
}

impl Traffic {
    /// Counts one answered request that took `took`.
    pub(crate) fn record(&self, took: Duration, status: axum::http::StatusCode) {
        let ms = took.as_secs_f32() * 1_000.0;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        if status == axum::http::StatusCode::TOO_MANY_REQUESTS {
            self.too_many.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(mut samples) = self.samples.lock()
            && samples.len() < MAX_SAMPLES
        {
            samples.push(ms);
        }
    }
}

/// Counts every `/api` request of this replica for the metrics snapshot ([`CountTraffic`]).
#[derive(Clone)]
pub struct TrafficLayer(pub Arc<Traffic>);

impl<S> Layer<S> for TrafficLayer {
    type Service = CountTraffic<S>;

    fn layer(&self, inner: S) -> CountTraffic<S> {
        CountTraffic {
            inner,
            traffic: Arc::clone(&self.0),
        }
    }
}

/// A route whose requests are counted. The live stream itself is left out: it is one long
/// request per viewer. A tower service rather than `from_fn`, which cloned the stack below it
/// per request.
#[derive(Clone)]
pub struct CountTraffic<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> Service<Request> for CountTraffic<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if request.uri().path() == "/api/events" {
            return Box::pin(self.inner.call(request));
        }
        let started = Instant::now();
        let traffic = Arc::clone(&self.traffic);
        let answer = self.inner.call(request);
        Box::pin(async move {
            let Ok(response) = answer.await;
            traffic.record(started.elapsed(), response.status());
            Ok(response)
        })
    }
}

/// Runs the bridge until `shutdown`.
pub async fn run(
    instance_id: String,
    backplane: Backplane,
    proxy: Proxy,
    limiter: RateLimiter,
    traffic: Arc<Traffic>,
    shutdown: CancellationToken,
) {
    let mut resilience = proxy.subscribe();
    let mut decisions = limiter.subscribe();
    let mut tick = tokio::time::interval(METRICS_EVERY);
    let mut period_started = Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            event = resilience.recv() => match event {
                Ok(event) => on_resilience(&instance_id, &backplane, &traffic, &proxy, event),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            decision = decisions.recv() => match decision {
                Ok(decision) => on_decision(&instance_id, &backplane, decision),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => {
                let seconds = period_started.elapsed().as_secs_f64().max(0.001);
                period_started = Instant::now();
                let snapshot = take_snapshot(&traffic, &proxy, seconds);
                backplane.publish(LiveEvent::public(instance_id.clone(), LiveBody::Metrics(snapshot)));
            }
        }
    }
}

fn on_resilience(
    instance_id: &str,
    backplane: &Backplane,
    traffic: &Traffic,
    proxy: &Proxy,
    event: ResilienceEvent,
) {
    match &event {
        ResilienceEvent::Retried { .. } => {
            traffic.retries.fetch_add(1, Ordering::Relaxed);
            return;
        }
        ResilienceEvent::Rejected { .. } => {
            traffic.fail_fast.fetch_add(1, Ordering::Relaxed);
            return;
        }
        ResilienceEvent::BreakerChanged {
            service,
            endpoint,
            from,
            to,
            reason,
        } => {
            let replica = ReplicaChange::of(proxy, service, endpoint, *from, *to, reason);
            let level = if matches!(to, BreakerState::Open) {
                "warn"
            } else {
                "info"
            };
            backplane.publish(LiveEvent::public(
                instance_id,
                LiveBody::Console(ConsoleLine {
                    level: level.into(),
                    text: format!(
                        "breaker {service} @ {endpoint} → {to:?}: {reason}{}",
                        replica
                            .as_ref()
                            .map(ReplicaChange::meaning)
                            .unwrap_or_default()
                    ),
                }),
            ));
            if let Some(Ok(data)) = replica.map(|r| serde_json::to_value(&r)) {
                backplane.publish(LiveEvent::public(instance_id, LiveBody::Breaker(data)));
            }
        }
        ResilienceEvent::BudgetExhausted { service } => {
            backplane.publish(LiveEvent::public(
                instance_id,
                LiveBody::Console(ConsoleLine {
                    level: "warn".into(),
                    text: format!(
                        "retry budget of {service} exhausted: failures are no longer retried"
                    ),
                }),
            ));
        }
    }
    if let Ok(data) = serde_json::to_value(&event) {
        backplane.publish(LiveEvent::public(instance_id, LiveBody::Breaker(data)));
    }
}

/// What a breaker change means for its service's traffic: a replica ejected from the
/// round-robin (its breaker opened, calls skip it until the probe), put on probation (the break
/// is over: the next call is the probe) or back in (the probe succeeded, or a reset). A
/// `breaker` event of its own, next to the breaker's `breaker_changed`, so the /chaos page can
/// show ejected replicas and their time until probe without knowing breaker internals.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReplicaChange {
    ReplicaEjected {
        service: String,
        endpoint: String,
        /// Why: the failure ratio that opened the breaker, or a failed probe.
        reason: String,
        /// Until the break ends and the next call to it is let through as the probe.
        probe_in_ms: u64,
        /// Replicas of the service still taking calls, out of `replicas`.
        serving: usize,
        replicas: usize,
    },
    ReplicaProbing {
        service: String,
        endpoint: String,
    },
    ReplicaRestored {
        service: String,
        endpoint: String,
        /// The probe's success, or a reset by hand.
        reason: String,
        serving: usize,
        replicas: usize,
    },
}

impl ReplicaChange {
    /// The change a breaker's `from → to` makes to its replica's place in the round-robin, with
    /// the time until probe and the service's serving replicas from the proxy's snapshot.
    pub fn of(
        proxy: &Proxy,
        service: &str,
        endpoint: &str,
        from: BreakerState,
        to: BreakerState,
        reason: &str,
    ) -> Option<Self> {
        let siblings: Vec<_> = proxy
            .breakers()
            .into_iter()
            .filter(|b| &*b.service == service)
            .collect();
        let replicas = siblings.len();
        let serving = siblings
            .iter()
            .filter(|b| b.state != BreakerState::Open)
            .count();
        let (service, endpoint, reason) = (service.to_owned(), endpoint.to_owned(), reason.into());
        match (from, to) {
            (_, BreakerState::Open) => {
                let probe_in_ms = siblings
                    .iter()
                    .find(|b| *b.endpoint == *endpoint)
                    .and_then(|b| b.retry_after_ms)
                    .unwrap_or(0);
                Some(Self::ReplicaEjected {
                    service,
                    endpoint,
                    reason,
                    probe_in_ms,
                    serving,
                    replicas,
                })
            }
            (BreakerState::Open, BreakerState::HalfOpen) => {
                Some(Self::ReplicaProbing { service, endpoint })
            }
            (BreakerState::Open | BreakerState::HalfOpen, BreakerState::Closed) => {
                Some(Self::ReplicaRestored {
                    service,
                    endpoint,
                    reason,
                    serving,
                    replicas,
                })
            }
            _ => None,
        }
    }

    /// The change in words, appended to the breaker's console line.
    fn meaning(&self) -> String {
        match self {
            Self::ReplicaEjected {
                probe_in_ms,
                serving,
                replicas,
                ..
            } => format!(
                " — replica ejected, probe in {:.1} s ({serving} of {replicas} serving)",
                *probe_in_ms as f64 / 1_000.0
            ),
            Self::ReplicaProbing { .. } => " — the next call to it is the probe".to_owned(),
            Self::ReplicaRestored {
                serving, replicas, ..
            } => format!(" — replica back in the round-robin ({serving} of {replicas} serving)"),
        }
    }
}

/// A refusal is news for everybody (without saying whose); the demo bucket's decisions are news
/// for the visitor running it.
fn on_decision(instance_id: &str, backplane: &Backplane, decision: RateLimitEvent) {
    let session = decision.scope.strip_prefix("s:").map(str::to_owned);
    if decision.class.is_none() {
        if let (Some(session), Ok(data)) = (session, serde_json::to_value(&decision)) {
            backplane.publish(
                LiveEvent::public(instance_id, LiveBody::RateLimit(data)).for_session(session),
            );
        }
        return;
    }
    if !decision.allowed {
        let data = json!({ "class": decision.class, "allowed": false, "limit": decision.limit, "mode": decision.mode });
        backplane.publish(LiveEvent::public(instance_id, LiveBody::RateLimit(data)));
    }
}

fn take_snapshot(traffic: &Traffic, proxy: &Proxy, seconds: f64) -> serde_json::Value {
    let mut samples = traffic
        .samples
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    // A selection per quantile, not a sort of the period's samples (up to 50k every 2 s: ~1 %
    // of a proxied read's instructions under load, callgrind).
    let mut quantile = |q: f64| -> Option<f32> {
        if samples.is_empty() {
            return None;
        }
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        Some(*samples.select_nth_unstable_by(index, f32::total_cmp).1)
    };
    let (p50, p99) = (quantile(0.50), quantile(0.99));
    let requests = traffic.requests.swap(0, Ordering::Relaxed);
    let errors = traffic.server_errors.swap(0, Ordering::Relaxed);
    json!({
        "period_s": seconds,
        "requests": requests,
        "requests_per_s": requests as f64 / seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "server_errors": errors,
        "error_rate": if requests == 0 { 0.0 } else { errors as f64 / requests as f64 },
        "rate_limited": traffic.too_many.swap(0, Ordering::Relaxed),
        "retries": traffic.retries.swap(0, Ordering::Relaxed),
        "fail_fast": traffic.fail_fast.swap(0, Ordering::Relaxed),
        "upstreams": proxy.breakers(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reports_the_periods_rates_and_quantiles_and_starts_the_next_period_empty() {
        let traffic = Traffic::default();
        for ms in 1..=100 {
            traffic.samples.lock().unwrap().push(ms as f32);
        }
        traffic.requests.store(100, Ordering::Relaxed);
        traffic.server_errors.store(5, Ordering::Relaxed);
        let proxy = Proxy::new(&[], &crate::proxy::ProxySettings::default());

        let first = take_snapshot(&traffic, &proxy, 2.0);
        let second = take_snapshot(&traffic, &proxy, 2.0);

        assert_eq!(first["requests_per_s"], 50.0);
        assert_eq!(first["p50_ms"], 51.0);
        assert_eq!(first["p99_ms"], 99.0);
        assert_eq!(first["error_rate"], 0.05);
        assert_eq!(second["requests"], 0);
        assert!(second["p99_ms"].is_null());
    }

    #[test]
    fn a_breaker_change_is_read_as_the_replicas_place_in_the_round_robin() {
        use BreakerState::{Closed, HalfOpen, Open};
        let instances = [
            ("catalog".to_owned(), "http://a".to_owned()),
            ("catalog".to_owned(), "http://b".to_owned()),
            ("orders".to_owned(), "http://c".to_owned()),
        ];
        let proxy = Proxy::new(&instances, &crate::proxy::ProxySettings::default());
        let of = |from, to| ReplicaChange::of(&proxy, "catalog", "http://a", from, to, "why");

        assert!(matches!(
            of(Closed, Open),
            Some(ReplicaChange::ReplicaEjected { replicas: 2, ref endpoint, .. }) if endpoint == "http://a"
        ));
        assert!(matches!(
            of(HalfOpen, Open),
            Some(ReplicaChange::ReplicaEjected { .. })
        ));
        assert!(matches!(
            of(Open, HalfOpen),
            Some(ReplicaChange::ReplicaProbing { .. })
        ));
        assert!(matches!(
            of(HalfOpen, Closed),
            Some(ReplicaChange::ReplicaRestored {
                serving: 2,
                replicas: 2,
                ..
            })
        ));
        assert!(matches!(
            of(Open, Closed),
            Some(ReplicaChange::ReplicaRestored { .. })
        ));
        assert_eq!(of(Closed, HalfOpen), None);
    }
}
