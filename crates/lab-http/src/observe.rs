//! The middleware every request passes: request and instance ids, one tracing span carrying
//! them, one log line, and Prometheus counts and latencies per route and status.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue, Method};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tower::{Layer, Service};
use tracing::Instrument;

use lab_telemetry::Metrics;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_INSTANCE_ID: HeaderName = HeaderName::from_static("x-instance-id");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// Static for the standard methods, so labelling a request allocates nothing.
    method: Cow<'static, str>,
    /// Interned per route (see [`Routes`]).
    route: Arc<str>,
    status: u16,
}

/// Route templates seen so far, so each request's label shares one `Arc<str>` per route.
/// foldhash, not SipHash: the keys are the service's own route templates, and the lookup runs on
/// every request.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<Interned>>);

type Interned = HashMap<Box<str>, Arc<str>, foldhash::fast::RandomState>;

impl Routes {
    fn intern(&self, route: &str) -> Arc<str> {
        if let Some(r) = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
        {
            return r.clone();
        }
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(route.into())
            .or_insert_with(|| route.into())
            .clone()
    }
}

fn method_label(method: &Method) -> Cow<'static, str> {
    match *method {
        Method::GET => Cow::Borrowed("GET"),
        Method::POST => Cow::Borrowed("POST"),
        Method::PUT => Cow::Borrowed("PUT"),
        Method::PATCH => Cow::Borrowed("PATCH"),
        Method::DELETE => Cow::Borrowed("DELETE"),
        Method::HEAD => Cow::Borrowed("HEAD"),
        Method::OPTIONS => Cow::Borrowed("OPTIONS"),
        ref other => Cow::Owned(other.as_str().to_owned()),
    }
}

/// HTTP metrics of one application, registered once.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<RouteLabels, Counter>,
    duration: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let requests = Family::<RouteLabels, Counter>::default();
        // Buckets from 0.5 ms to ~8 s: a cached read is sub-millisecond, a saga step is tens of ms.
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.0005, 2.0, 15,
            ))
        });
        metrics.register(
            "http_requests",
            "HTTP requests served, by method, route and status",
            requests.clone(),
        );
        metrics.register(
            "http_request_duration_seconds",
            "HTTP request latency, by method, route and status",
            duration.clone(),
        );
        Self { requests, duration }
    }
}

/// What the middleware needs: who we are and where to count.
#[derive(Clone)]
pub struct ObserveState {
    pub instance_id: Arc<str>,
    /// The same, ready to send (built once, cloned per response).
    pub instance_header: HeaderValue,
    pub metrics: HttpMetrics,
    pub routes: Routes,
}

/// A caller's request id is kept when it is short printable ASCII; anything else is replaced,
/// so a hostile header cannot forge log lines.
fn acceptable_request_id(value: &HeaderValue) -> bool {
    acceptable_request_id_bytes(value.as_bytes())
}

/// [`acceptable_request_id`] of a header's raw bytes (a front that parses heads itself).
pub fn acceptable_request_id_bytes(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic)
}

/// Wraps every route of a service with [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer {
    state: ObserveState,
    /// The route template when the wrapped service is not behind the router (the fast path),
    /// which would otherwise tell it through `MatchedPath`.
    fixed_route: Option<&'static str>,
}

impl ObserveLayer {
    /// For the router's routes: each learns its template from `MatchedPath`.
    pub fn new(state: ObserveState) -> Self {
        Self {
            state,
            fixed_route: None,
        }
    }

    /// For a service served outside the router under `template`.
    pub fn fixed(state: ObserveState, template: &'static str) -> Self {
        Self {
            state,
            fixed_route: Some(template),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        let route = OnceLock::new();
        if let Some(template) = self.fixed_route {
            let _ = route.set(self.state.routes.intern(template));
        }
        Observe {
            inner,
            observer: Arc::new(RouteObserver {
                state: self.state.clone(),
                route,
                fixed: self.fixed_route.is_some(),
                usual: OnceLock::new(),
            }),
        }
    }
}

/// What the middleware of one route keeps (axum layers each route separately): the shared
/// state and, learned from the route's first answers, its interned label and the metric handles
/// of its usual success, so the common request does no map lookups (the two metric families and
/// the interner were ~6 % of a cached read's instructions, callgrind).
struct RouteObserver {
    state: ObserveState,
    /// The route template this middleware has served.
    route: OnceLock<Arc<str>>,
    /// Whether `route` was given (the fast path) rather than learned from `MatchedPath`.
    fixed: bool,
    /// Method, status and handles of the first answer below 400.
    usual: OnceLock<Usual>,
}

struct Usual {
    method: Cow<'static, str>,
    status: u16,
    requests: Counter,
    duration: Histogram,
}

impl RouteObserver {
    fn route(&self, matched: &str) -> Arc<str> {
        match self.route.get() {
            Some(route) if self.fixed || **route == *matched => route.clone(),
            _ => {
                let route = self.state.routes.intern(matched);
                let _ = self.route.set(route.clone());
                route
            }
        }
    }

    /// The log line and the metrics of one answered request.
    fn finish(
        &self,
        span: &tracing::Span,
        method: Cow<'static, str>,
        route: Arc<str>,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let quiet = matches!(&*route, "/livez" | "/readyz" | "/metrics");
        span.in_scope(|| {
            let ms = elapsed.as_secs_f64() * 1000.0;
            if status >= 500 {
                tracing::warn!(%method, %route, status, ms, "request failed");
            } else if quiet {
                tracing::debug!(%method, %route, status, ms, "request");
            } else {
                tracing::info!(%method, %route, status, ms, "request");
            }
        });
        let labels = RouteLabels {
            method,
            route,
            status,
        };
        self.record(labels, elapsed.as_secs_f64());
    }

    fn record(&self, labels: RouteLabels, seconds: f64) {
        if let Some(u) = self
            .usual
            .get()
            .filter(|u| u.status == labels.status && u.method == labels.method)
        {
            u.requests.inc();
            u.duration.observe(seconds);
            return;
        }
        let requests = self.state.metrics.requests.get_or_create(&labels).clone();
        let duration = self.state.metrics.duration.get_or_create(&labels).clone();
        requests.inc();
        duration.observe(seconds);
        if labels.status < 400 {
            let _ = self.usual.set(Usual {
                method: labels.method,
                status: labels.status,
                requests,
                duration,
            });
        }
    }
}

/// Ids, span, log line and metrics around one route. A hand-written service rather than
/// `axum::middleware::from_fn`, which splits and rebuilds each request and boxes a clone of the
/// route per call (measured with callgrind on the cached-read path).
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    observer: Arc<RouteObserver>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let started = Instant::now();
        let observer = self.observer.clone();
        // The id travels as the request's `X-Request-Id` header (handlers and proxies read it
        // there) and comes back on the response.
        let caller_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .filter(|v| acceptable_request_id(v))
            .cloned();
        let request_id = match caller_id {
            Some(id) => id,
            None => {
                let id = new_request_id();
                req.headers_mut().insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let route = observer.route(
            req.extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str),
        );
        let method = method_label(req.method());
        let span = tracing::info_span!(
            "req",
            request_id = request_id.to_str().unwrap_or_default(),
            instance = %observer.state.instance_id
        );
        // The inner service was polled ready for exactly this call: no clone needed.
        let response = span.in_scope(|| self.inner.call(req));
        Box::pin(async move {
            let Ok(mut response) = response.instrument(span.clone()).await;
            let status = response.status().as_u16();
            observer.finish(&span, method, route, status, started.elapsed());
            let headers = response.headers_mut();
            headers.insert(X_REQUEST_ID.clone(), request_id);
            headers.insert(
                X_INSTANCE_ID.clone(),
                observer.state.instance_header.clone(),
            );
            Ok(response)
        })
    }
}

/// A request id unique across processes and restarts: a random per-process prefix and a counter.
/// (A UUIDv7 per request asked the kernel for randomness each time: visible in profiles.)
pub fn new_request_id() -> HeaderValue {
    HeaderValue::from_bytes(&new_request_id_digits())
        .unwrap_or_else(|_| unreachable!("hex digits are a header value"))
}

/// [`new_request_id`]'s 32 lowercase hex digits, on the stack (a front that writes heads itself
/// need not allocate a header value for them).
pub fn new_request_id_digits() -> [u8; 32] {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Hex by hand: `format!` showed up in profiles of the hot path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    for (i, word) in [prefix, count].into_iter().enumerate() {
        for shift in 0..16 {
            id[i * 16 + 15 - shift] = HEX[((word >> (shift * 4)) & 0xf) as usize];
        }
    }
    id
}

/// `<service>-<replica>-<4 random hex>`: tells replicas apart, and a restarted process from its
/// predecessor.
pub fn new_instance_id(service: &str, replica: u16) -> String {
    let suffix: u16 = rand::random();
    format!("{service}-{replica}-{suffix:04x}")
}

/// The platform middleware's bookkeeping for requests a front answers outside the router: the
/// same log line and metrics, under a route template the front names.
#[derive(Clone)]
pub struct Observer(ObserveState);

impl Observer {
    /// Records requests as the route `template` (`/api/products/{id}`).
    pub fn route(&self, template: &str) -> RouteRecorder {
        let route = OnceLock::new();
        let _ = route.set(self.0.routes.intern(template));
        RouteRecorder(Arc::new(RouteObserver {
            state: self.0.clone(),
            route,
            fixed: true,
            usual: OnceLock::new(),
        }))
    }

    /// This process's `X-Instance-Id`, ready to send.
    pub fn instance_header(&self) -> &HeaderValue {
        &self.0.instance_header
    }
}

impl From<ObserveState> for Observer {
    fn from(state: ObserveState) -> Self {
        Self(state)
    }
}

/// One route's log line and metrics, for a front.
#[derive(Clone)]
pub struct RouteRecorder(Arc<RouteObserver>);

impl RouteRecorder {
    /// `method` answered with `status`, `took` since its head was read, under `request_id`
    /// (visible ASCII; read as text only when the span is logged).
    pub fn finish(&self, method: &Method, status: u16, took: Duration, request_id: &[u8]) {
        let observer = &self.0;
        let span = tracing::info_span!(
            "req",
            request_id = std::str::from_utf8(request_id).unwrap_or_default(),
            instance = %observer.state.instance_id
        );
        let route = observer.route("");
        observer.finish(&span, method_label(method), route, status, took);
    }
}
