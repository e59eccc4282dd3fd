//! The middleware every request passes: request and instance ids, one tracing span carrying
//! them, one log line, and Prometheus counts and latencies per route and status.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderName, HeaderValue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tracing::Instrument;

use lab_telemetry::Metrics;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_INSTANCE_ID: HeaderName = HeaderName::from_static("x-instance-id");

/// The id of the request being served, in the request's extensions for handlers that want it.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
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
    pub metrics: HttpMetrics,
}

/// A caller's request id is kept when it is short printable ASCII; anything else is replaced,
/// so a hostile header cannot forge log lines.
fn accept_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

pub async fn observe(State(state): State<ObserveState>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let request_id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(accept_request_id)
        .unwrap_or_else(new_request_id);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        req.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }

    let span = tracing::info_span!("req", request_id = %request_id, instance = %state.instance_id);
    let mut response = next.run(req).instrument(span.clone()).await;

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let labels = RouteLabels {
        method: method.clone(),
        route: route.clone(),
        status,
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64());

    let quiet = matches!(route.as_str(), "/livez" | "/readyz" | "/metrics");
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

    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert(X_REQUEST_ID.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&state.instance_id) {
        headers.insert(X_INSTANCE_ID.clone(), v);
    }
    response
}

/// A request id unique across processes and restarts: a random per-process prefix and a counter.
/// (A UUIDv7 per request asked the kernel for randomness each time: visible in profiles.)
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(rand::random);
    format!(
        "{prefix:016x}{:016x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// `<service>-<replica>-<4 random hex>`: tells replicas apart, and a restarted process from its
/// predecessor.
pub fn new_instance_id(service: &str, replica: u16) -> String {
    let suffix: u16 = rand::random();
    format!("{service}-{replica}-{suffix:04x}")
}
