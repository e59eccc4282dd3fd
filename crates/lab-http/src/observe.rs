//! The middleware every request passes: request and instance ids, one tracing span carrying
//! them, one log line, and Prometheus counts and latencies per route and status.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

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

/// The id of the request being served, in the request's extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    /// Static for the standard methods, so labelling a request allocates nothing.
    method: Cow<'static, str>,
    /// Interned per route (see [`Routes`]).
    route: Arc<str>,
    status: u16,
}

/// Route templates seen so far, so each request's label shares one `Arc<str>` per route.
#[derive(Clone, Default)]
pub struct Routes(Arc<RwLock<HashMap<Box<str>, Arc<str>>>>);

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
fn accept_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

/// Wraps every route of a service with [`Observe`].
#[derive(Clone)]
pub struct ObserveLayer(pub ObserveState);

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            state: self.0.clone(),
        }
    }
}

/// Ids, span, log line and metrics around one route. A hand-written service rather than
/// `axum::middleware::from_fn`, which splits and rebuilds each request and boxes a clone of the
/// route per call (measured with callgrind on the cached-read path).
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    state: ObserveState,
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
        let state = self.state.clone();
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(accept_request_id)
            .unwrap_or_else(new_request_id);
        let route = state.routes.intern(
            req.extensions()
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str),
        );
        let method = method_label(req.method());
        let request_header = HeaderValue::from_str(&request_id).ok();
        if let Some(v) = &request_header {
            req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
        }
        let span =
            tracing::info_span!("req", request_id = %request_id, instance = %state.instance_id);
        req.extensions_mut().insert(RequestId(request_id));
        // The inner service was polled ready for exactly this call: no clone needed.
        let response = span.in_scope(|| self.inner.call(req));
        Box::pin(async move {
            let Ok(mut response) = response.instrument(span.clone()).await;
            let status = response.status().as_u16();
            let elapsed = started.elapsed();
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
            state.metrics.requests.get_or_create(&labels).inc();
            state
                .metrics
                .duration
                .get_or_create(&labels)
                .observe(elapsed.as_secs_f64());
            let headers = response.headers_mut();
            if let Some(v) = request_header {
                headers.insert(X_REQUEST_ID.clone(), v);
            }
            headers.insert(X_INSTANCE_ID.clone(), state.instance_header.clone());
            Ok(response)
        })
    }
}

/// A request id unique across processes and restarts: a random per-process prefix and a counter.
/// (A UUIDv7 per request asked the kernel for randomness each time: visible in profiles.)
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(rand::random);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // Hex by hand: `format!` showed up in profiles of the hot path.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = String::with_capacity(32);
    for word in [prefix, count] {
        for shift in (0..16).rev() {
            id.push(char::from(HEX[((word >> (shift * 4)) & 0xf) as usize]));
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
