//! Rate limits at the edge: a token bucket per visitor (its session, or its client IP when it
//! came without one) and route class, shared by every BFF replica through Redis.
//!
//! Expensive routes have their own, stricter buckets ([`RouteClass`]); each answer carries
//! `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`, and a refusal is a 429
//! problem with `Retry-After`. Every refusal and every decision of the demo's bucket also goes
//! out on a broadcast channel of [`RateLimitEvent`]s for the live push stream (an allowed request
//! of a route class is news to no one, and sending it woke the stream's task per request).
//! The edge service ([`crate::edge`]) asks [`RateLimiter::check_now`] first, which answers
//! without an await from this replica's lease, then [`RateLimiter::check`]. How one bucket is kept — Redis, or this process
//! while Redis is out — is [`bucket`]'s business, and how a replica takes a few of a busy
//! visitor's tokens at once while the bucket is far from empty is [`lease`]'s; the demo's
//! configurable bucket is [`demo`].

mod bucket;
pub mod demo;
mod lease;

use std::sync::Arc;

use arrayvec::ArrayString;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use lab_cache::Redis;
use lab_http::Problem;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

pub use bucket::{Bucket, Decision, Mode, RateLimitHealth};

use crate::edge::{DecisionLabels, EdgeMetrics};
use crate::session::Scope;

pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Decisions buffered for slow subscribers of the event stream; a subscriber further behind
/// loses the oldest (the stream shows a live picture, not an audit log).
const EVENT_BUFFER: usize = 1_024;

/// The buckets of each route class (`LAB_BFF__EDGE__RATE_LIMIT__ORDERS__CAPACITY=…`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RateLimitSettings {
    /// Every `/api` route not named below.
    pub default: Bucket,
    /// `POST /api/orders`: each starts a saga across four services and a payment.
    pub orders: Bucket,
    /// `/api/demo/*`: each fans out into tens of calls.
    pub demo: Bucket,
    /// `/api/chaos/*` writes: each changes how the cluster behaves for everyone. Reads (the
    /// /chaos page polls the invariants every 5 s) are `default`: at this bucket's refill the
    /// poll alone would use it up, and a visitor's first fault would starve their own panel.
    pub chaos: Bucket,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            // A page load makes ~20 API calls: 100 absorbs a few quick reloads, 20/s is far
            // above a person clicking and far below a script.
            default: Bucket {
                capacity: 100,
                refill_per_s: 20.0,
            },
            // A person places a few orders a minute at most: 5 at once, then one per 5 s.
            orders: Bucket {
                capacity: 5,
                refill_per_s: 0.2,
            },
            // A demo run is one click that costs tens of calls: 10 at once, one per 2 s.
            demo: Bucket {
                capacity: 10,
                refill_per_s: 0.5,
            },
            // Chaos switches are rare by nature: 5 at once, one per 5 s.
            chaos: Bucket {
                capacity: 5,
                refill_per_s: 0.2,
            },
        }
    }
}

/// Why the rate-limit settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error(
        "LAB_BFF__EDGE__RATE_LIMIT__{class}: capacity must be at least 1 and refill_per_s above 0, not {bucket:?}"
    )]
    BadBucket { class: String, bucket: Bucket },
}

impl RateLimitSettings {
    /// Checks every class has a usable bucket.
    pub fn validate(&self) -> Result<(), RateLimitError> {
        for (name, bucket) in [
            ("default", self.default),
            ("orders", self.orders),
            ("demo", self.demo),
            ("chaos", self.chaos),
        ] {
            if bucket.capacity == 0
                || !(bucket.refill_per_s.is_finite() && bucket.refill_per_s > 0.0)
            {
                return Err(RateLimitError::BadBucket {
                    class: name.to_uppercase(),
                    bucket,
                });
            }
        }
        Ok(())
    }

    fn bucket(&self, class: RouteClass) -> Bucket {
        match class {
            RouteClass::Default => self.default,
            RouteClass::Orders => self.orders,
            RouteClass::Demo => self.demo,
            RouteClass::Chaos => self.chaos,
        }
    }
}

/// Which bucket a request spends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RouteClass {
    Default,
    Orders,
    Demo,
    Chaos,
}

impl RouteClass {
    /// The class of a request; `None` for `/api/health`, which operators and load balancers
    /// poll and which must answer while a client is limited.
    pub fn of(method: &Method, path: &str) -> Option<Self> {
        if path == "/api/health" {
            None
        } else if *method == Method::POST && path.trim_end_matches('/') == "/api/orders" {
            Some(Self::Orders)
        } else if path.starts_with("/api/demo/") {
            Some(Self::Demo)
        } else if path.starts_with("/api/chaos/") && !method.is_safe() {
            Some(Self::Chaos)
        } else {
            Some(Self::Default)
        }
    }

    /// Every class, in [`RouteClass::index`] order.
    const ALL: [Self; 4] = [Self::Default, Self::Orders, Self::Demo, Self::Chaos];

    /// The class's place in [`RouteClass::ALL`].
    fn index(self) -> usize {
        match self {
            Self::Default => 0,
            Self::Orders => 1,
            Self::Demo => 2,
            Self::Chaos => 3,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Orders => "orders",
            Self::Demo => "demo",
            Self::Chaos => "chaos",
        }
    }

    /// The class's bucket key for a visitor `scope`, held inline (it is made on every limited
    /// request): a class name and a [`Scope`] fit.
    pub fn key(self, scope: &Scope) -> ArrayString<64> {
        let mut key = ArrayString::new();
        key.push_str(self.as_str());
        key.push(':');
        key.push_str(scope);
        key
    }
}

/// The decision counters of every (class, outcome, mode), looked up in the metric family once
/// rather than per request.
struct DecisionCounters(Vec<Counter>);

impl DecisionCounters {
    /// The route classes, then the demo's bucket.
    const CLASSES: [Option<RouteClass>; 5] = [
        Some(RouteClass::Default),
        Some(RouteClass::Orders),
        Some(RouteClass::Demo),
        Some(RouteClass::Chaos),
        None,
    ];

    fn new(metrics: &EdgeMetrics) -> Self {
        let mut counters = Vec::with_capacity(Self::CLASSES.len() * 4);
        for class in Self::CLASSES {
            for allowed in [false, true] {
                for local in [false, true] {
                    let labels = DecisionLabels {
                        class: class.map_or("demo-bucket", RouteClass::as_str).into(),
                        outcome: if allowed { "allowed" } else { "refused" }.into(),
                        mode: if local { "local" } else { "shared" }.into(),
                    };
                    counters.push(metrics.rate_limit_decisions.get_or_create(&labels).clone());
                }
            }
        }
        Self(counters)
    }

    fn get(&self, class: Option<RouteClass>, allowed: bool, local: bool) -> Option<&Counter> {
        let class = Self::CLASSES.iter().position(|c| *c == class)?;
        self.0
            .get(class * 4 + usize::from(allowed) * 2 + usize::from(local))
    }
}

/// What a bucket decision was about, for the live push stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimitEvent {
    /// The visitor's scope: `s:<session>` or `ip:<address>`.
    pub scope: String,
    /// The route class, or `None` for the rate-limit demo's own bucket.
    pub class: Option<RouteClass>,
    pub allowed: bool,
    pub remaining: u32,
    pub limit: u32,
    pub mode: Mode,
}

/// The rate limiter every request below `/api` passes.
#[derive(Clone)]
pub struct RateLimiter {
    /// The buckets themselves, in Redis or (while it is out) in process.
    buckets: bucket::Buckets,
    /// Each class's bucket.
    settings: Arc<RateLimitSettings>,
    /// Every decision, for whoever listens (nobody is fine).
    events: broadcast::Sender<RateLimitEvent>,
    /// Decisions counted by class, outcome and mode.
    metrics: EdgeMetrics,
    /// The handles of `metrics`' decision counters.
    counters: Arc<DecisionCounters>,
    /// Each visitor's demo bucket shape.
    demo_shapes: Arc<demo::DemoShapes>,
    /// Each class's `RateLimit-Limit` value (by [`RouteClass::index`]), made once: the capacity
    /// never changes, and making it per answer was an allocation per read (callgrind).
    limits: Arc<[HeaderValue; 4]>,
}

impl RateLimiter {
    pub fn new(settings: RateLimitSettings, redis: Redis, metrics: EdgeMetrics) -> Self {
        let limits =
            RouteClass::ALL.map(|class| HeaderValue::from(settings.bucket(class).capacity));
        Self {
            buckets: bucket::Buckets::new(redis.clone()),
            demo_shapes: Arc::new(demo::DemoShapes::new(redis)),
            limits: Arc::new(limits),
            settings: Arc::new(settings),
            events: broadcast::channel(EVENT_BUFFER).0,
            counters: Arc::new(DecisionCounters::new(&metrics)),
            metrics,
        }
    }

    /// A receiver of every refusal and every demo-bucket decision from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<RateLimitEvent> {
        self.events.subscribe()
    }

    /// Where the buckets live now, for `/api/health`.
    pub fn health(&self) -> RateLimitHealth {
        self.buckets.health()
    }

    /// Spends one token of `scope`'s `class` bucket.
    pub async fn check(&self, scope: &Scope, class: RouteClass) -> Decision {
        let decision = self
            .buckets
            .take_leased(&class.key(scope), self.settings.bucket(class))
            .await;
        self.publish(scope, Some(class), &decision);
        decision
    }

    /// Spends one token of bucket `key` (a [`RouteClass::key`]) from this replica's lease of
    /// it, without waiting; `None` when there is no lease to spend from (ask [`Self::check`]).
    pub fn check_now(&self, key: &str, class: RouteClass) -> Option<Decision> {
        let decision = self
            .buckets
            .take_leased_now(key, self.settings.bucket(class))?;
        self.count(Some(class), &decision);
        Some(decision)
    }

    fn count(&self, class: Option<RouteClass>, decision: &Decision) {
        let local = decision.mode == Mode::Local;
        self.metrics.rate_limit_local.set(i64::from(local));
        if let Some(counter) = self.counters.get(class, decision.allowed, local) {
            counter.inc();
        }
    }

    /// Counts the decision and sends refusals and the demo bucket's decisions to the stream.
    fn publish(&self, scope: &str, class: Option<RouteClass>, decision: &Decision) {
        self.count(class, decision);
        if class.is_some() && decision.allowed {
            return;
        }
        // An error only means no one listens right now.
        let _ = self.events.send(RateLimitEvent {
            scope: scope.to_owned(),
            class,
            allowed: decision.allowed,
            remaining: decision.remaining,
            limit: decision.limit,
            mode: decision.mode,
        });
    }
}

/// The 429 problem for a refused request of `class`.
pub(crate) fn too_many(class: RouteClass, decision: &Decision) -> Response {
    let retry_after = decision.retry_after_s.unwrap_or(1);
    Problem::typed(
        StatusCode::TOO_MANY_REQUESTS,
        "rate-limited",
        "Too many requests",
    )
    .detail(format!(
        "the {} limit of {} requests is used up; one more is allowed in {retry_after} s",
        class.as_str(),
        decision.limit
    ))
    .with("class", class)
    .with("retry_after_s", retry_after)
    .header(http::header::RETRY_AFTER, HeaderValue::from(retry_after))
    .into_response()
}

/// The bucket's state, on every answer of a limited route.
pub(crate) fn set_headers(
    headers: &mut HeaderMap,
    limiter: &RateLimiter,
    class: RouteClass,
    decision: &Decision,
) {
    for (name, value) in state_headers(limiter, class, decision) {
        headers.insert(name.clone(), value);
    }
}

/// `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` for one decision.
pub(crate) fn state_headers(
    limiter: &RateLimiter,
    class: RouteClass,
    decision: &Decision,
) -> [(&'static HeaderName, HeaderValue); 3] {
    let [
        (limit_name, limit),
        (remaining_name, remaining),
        (reset_name, reset),
    ] = state(decision);
    // The demo's bucket has a shape of each visitor's choosing: only a class's own capacity is
    // the value made once.
    let limit = if decision.limit == limiter.settings.bucket(class).capacity {
        limiter.limits[class.index()].clone()
    } else {
        HeaderValue::from(limit)
    };
    [
        (limit_name, limit),
        (remaining_name, number(remaining)),
        (reset_name, number(reset)),
    ]
}

/// The bucket's state headers of one decision, as numbers: what [`state_headers`] sends, for a
/// writer that prints numbers itself (the proxy's fast path).
pub(crate) fn state(decision: &Decision) -> [(&'static HeaderName, u64); 3] {
    [
        (&RATELIMIT_LIMIT, u64::from(decision.limit)),
        (&RATELIMIT_REMAINING, u64::from(decision.remaining)),
        (&RATELIMIT_RESET, decision.reset_s),
    ]
}

/// A header value for `n`, with no allocation for the single digits: a bucket's reset is a few
/// seconds away at most under the default classes, and `HeaderValue::from` allocates each time.
fn number(n: u64) -> HeaderValue {
    const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match usize::try_from(n).ok().and_then(|i| DIGITS.get(i)) {
        Some(digit) => HeaderValue::from_static(digit),
        None => HeaderValue::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expensive_routes_have_their_own_class_and_health_none() {
        assert_eq!(
            RouteClass::of(&Method::POST, "/api/orders"),
            Some(RouteClass::Orders)
        );
        assert_eq!(
            RouteClass::of(&Method::GET, "/api/orders"),
            Some(RouteClass::Default)
        );
        assert_eq!(
            RouteClass::of(&Method::POST, "/api/demo/rate-limit"),
            Some(RouteClass::Demo)
        );
        assert_eq!(
            RouteClass::of(&Method::PUT, "/api/chaos/latency"),
            Some(RouteClass::Chaos)
        );
        assert_eq!(
            RouteClass::of(&Method::DELETE, "/api/chaos/faults/f-1"),
            Some(RouteClass::Chaos)
        );
        assert_eq!(
            RouteClass::of(&Method::GET, "/api/chaos/invariants"),
            Some(RouteClass::Default)
        );
        assert_eq!(RouteClass::of(&Method::GET, "/api/health"), None);
    }

    #[test]
    fn a_bucket_without_capacity_or_refill_is_refused_naming_its_variable() {
        let mut settings = RateLimitSettings::default();
        assert!(settings.validate().is_ok());
        settings.orders.refill_per_s = 0.0;

        let error = settings
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();

        assert!(
            error.contains("LAB_BFF__EDGE__RATE_LIMIT__ORDERS"),
            "{error}"
        );
    }
}
