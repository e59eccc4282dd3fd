//! The server bootstrap every Lab service shares.
//!
//! [`ServiceApp`] wraps a service's routes with the platform surface (`/livez`, `/readyz`,
//! `/metrics`, `/openapi.json`), request and instance ids, metrics, problem+json for every error
//! (unknown route, wrong method, panic, bad body), and [`serve`] runs it with a bounded graceful
//! shutdown.

mod app;
mod extract;
mod fast;
mod front;
mod observe;
mod probe;
mod problem;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use http::{HeaderValue, StatusCode, header};
use lab_telemetry::Metrics;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

pub use app::{Application, HttpSettings};
pub use extract::{Json, Path, Query};
pub use fast::{FastPath, FastRoute};
pub use front::{Fast, Head, put_date, put_header, put_status_line, tokens};
pub use observe::{
    Observer, RouteRecorder, X_INSTANCE_ID, X_REQUEST_ID, acceptable_request_id_bytes,
    new_instance_id, new_request_id, new_request_id_digits,
};
pub use probe::{CheckReport, PROBE_TIMEOUT, Probe, Readiness, ReadinessReport};
pub use problem::{PROBLEM_JSON, Problem};

/// Who a service is and what it exposes besides its own routes.
#[derive(Clone)]
pub struct ServiceApp {
    /// The service's name: `catalog`, `bff`, …
    pub name: &'static str,
    /// This process's id, sent as `X-Instance-Id` on every response.
    pub instance_id: Arc<str>,
    /// The registry `/metrics` renders.
    pub metrics: Metrics,
    /// The probes `/readyz` runs.
    pub readiness: Readiness,
    /// The service's own OpenAPI document; the platform routes are merged in.
    pub openapi: utoipa::openapi::OpenApi,
}

#[derive(Clone)]
struct PlatformState {
    /// Behind an `Arc`: axum clones a router's state for every request it serves, and a
    /// `ServiceApp` holds the whole OpenAPI tree (measured: /livez at 2.5k req/s instead of ~25k).
    app: Arc<ServiceApp>,
    openapi: Arc<String>,
}

impl ServiceApp {
    /// Wraps `routes` with the platform routes and middleware.
    pub fn router(self, routes: Router) -> Router {
        self.build(routes).0
    }

    /// Like [`ServiceApp::router`], and the middleware's bookkeeping for a
    /// [`Fast`] path that answers some requests itself.
    pub fn router_with_observer(self, routes: Router) -> (Router, Observer) {
        let (router, observe) = self.build(routes);
        (router, observe.into())
    }

    /// Like [`ServiceApp::router`], and `fast` served in front of the router with the same
    /// middleware; give both to [`Application::with_fast_path`].
    pub fn router_with_fast_path(self, routes: Router, fast: FastRoute) -> (Router, FastPath) {
        let (router, observe) = self.build(routes);
        let template = fast.template;
        use tower::layer::util::Stack;
        // The router's layers, in the same order; axum turns each route's body back into its
        // own `Body`, done here by the last layer.
        let middleware = Stack::new(
            Stack::new(
                observe::ObserveLayer::fixed(observe, template),
                tower_http::catch_panic::CatchPanicLayer::custom(
                    panic_to_problem as fn(Box<dyn std::any::Any + Send>) -> Response,
                ),
            ),
            tower::util::MapResponseLayer::new(|r: http::Response<_>| -> Response {
                r.map(axum::body::Body::new)
            }),
        );
        (router, FastPath::new(fast, middleware))
    }

    fn build(self, routes: Router) -> (Router, observe::ObserveState) {
        let http_metrics = observe::HttpMetrics::register(&self.metrics);
        let mut doc = self.openapi.clone();
        doc.merge(PlatformApi::openapi());
        doc.info.title = format!("lab {}", self.name);
        let openapi = Arc::new(doc.to_pretty_json().unwrap_or_else(|_| "{}".into()));
        let observe_state = observe::ObserveState {
            instance_header: HeaderValue::from_str(&self.instance_id)
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-instance-id")),
            instance_id: self.instance_id.clone(),
            metrics: http_metrics,
            routes: observe::Routes::default(),
        };
        let platform = Router::new()
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/openapi.json", get(openapi_json))
            .with_state(PlatformState {
                app: Arc::new(self),
                openapi,
            });
        // The panic guard outside the observer, both in one `layer` call: axum makes each call
        // a level of every route, cloned and boxed per request (callgrind on the BFF's proxied
        // read, docs/BENCHMARKS.md `lab bench bff`, session 6).
        let router = routes
            .merge(platform)
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer((
                tower_http::catch_panic::CatchPanicLayer::custom(panic_to_problem),
                observe::ObserveLayer::new(observe_state.clone()),
            ));
        (router, observe_state)
    }
}

#[derive(OpenApi)]
#[openapi(
    paths(livez, readyz, metrics),
    components(schemas(Problem, ReadinessReport, CheckReport))
)]
struct PlatformApi;

/// The process is alive (it answers); says nothing about dependencies.
#[utoipa::path(get, path = "/livez", tag = "platform", responses((status = 200, description = "alive")))]
async fn livez() -> &'static str {
    "ok"
}

/// Probes every dependency; 503 when a critical one is down.
#[utoipa::path(get, path = "/readyz", tag = "platform", responses(
    (status = 200, description = "ready or degraded", body = ReadinessReport),
    (status = 503, description = "a critical dependency is down", body = ReadinessReport),
))]
async fn readyz(State(state): State<PlatformState>) -> Response {
    let report = state
        .app
        .readiness
        .check(state.app.name, &state.app.instance_id)
        .await;
    let status = if report.status == "not_ready" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(report)).into_response()
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "platform", responses((status = 200, description = "metrics in Prometheus text format")))]
async fn metrics(State(state): State<PlatformState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.app.metrics.render(),
    )
        .into_response()
}

async fn openapi_json(State(state): State<PlatformState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}

async fn not_found(uri: http::Uri) -> Problem {
    Problem::not_found(format!("no route for {}", uri.path()))
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED)
        .detail(format!("{method} is not allowed on {}", uri.path()))
}

fn panic_to_problem(panic: Box<dyn std::any::Any + Send>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %what, "handler panicked");
    Problem::internal().into_response()
}

/// Why a listener could not be opened, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("{addr} is already in use: stop what holds it, or choose another port")]
    InUse { addr: SocketAddr },
    #[error("cannot listen on {addr}: {source}")]
    Other {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 picks a free one), mapping the usual failure to a clear message.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| {
        if source.kind() == std::io::ErrorKind::AddrInUse {
            BindError::InUse { addr }
        } else {
            BindError::Other { addr, source }
        }
    })
}

/// Serves `router` until `shutdown` is cancelled, then stops accepting and lets in-flight
/// requests finish for at most `grace` before giving up on them.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()>
where
    S: tower::Service<
            axum::extract::Request,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // Without TCP_NODELAY a small response can wait out the client's delayed ACK (~40 ms):
    // measured here as /livez at 1.4k req/s instead of tens of thousands.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::trace!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // With the peer's address as `ConnectInfo<SocketAddr>`: the BFF needs the socket peer to
    // decide whether `X-Forwarded-For` comes from a trusted proxy.
    let make_service = axum::ServiceExt::into_make_service_with_connect_info::<SocketAddr>(service);
    let server = axum::serve(listener, make_service)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::select! {
        result = server => result,
        () = async { shutdown.cancelled().await; grace_over(grace).await } => Ok(()),
    }
}

/// Resolves when `grace` has passed, saying that in-flight requests outlived it (both servers'
/// bounded drain after shutdown).
pub(crate) async fn grace_over(grace: Duration) {
    tokio::time::sleep(grace).await;
    tracing::warn!(
        grace_ms = grace.as_millis() as u64,
        "in-flight requests outlived the grace period; closing them"
    );
}

/// Resolves on SIGTERM or Ctrl-C, whichever comes first.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests;
