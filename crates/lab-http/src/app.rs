//! A service ready to serve: its listener bound, its router built.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The HTTP part of every service's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpSettings {
    /// Where to listen; the apphost passes a port of its choosing, tests pass port 0.
    pub listen: SocketAddr,
    /// Which replica of the service this is (1-based), part of the instance id.
    pub replica: u16,
    /// How long in-flight requests may run after shutdown starts; Kubernetes' default
    /// termination grace is 30 s, a local run wants to stop faster.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            replica: 1,
            shutdown_grace_ms: 5_000,
        }
    }
}

/// A bound, built service; [`Application::run`] serves until the shutdown token fires.
pub struct Application {
    /// The address actually bound (the port is real even when 0 was asked for).
    pub addr: SocketAddr,
    /// This process's `X-Instance-Id`.
    pub instance_id: String,
    listener: TcpListener,
    router: Router,
    /// Served in front of the router when the service has one.
    fast: Option<crate::FastPath>,
    /// lab-http's own HTTP/1 server with the service's fast path, when it has one.
    front: Option<crate::front::Server>,
    shutdown: CancellationToken,
    grace: Duration,
}

impl Application {
    /// Binds `settings.listen` and keeps `router` for [`Application::run`].
    pub async fn bind(
        settings: &HttpSettings,
        instance_id: String,
        router: Router,
        shutdown: CancellationToken,
    ) -> Result<Self, crate::BindError> {
        let listener = crate::bind(settings.listen).await?;
        let addr = listener
            .local_addr()
            .map_err(|source| crate::BindError::Other {
                addr: settings.listen,
                source,
            })?;
        Ok(Self {
            addr,
            instance_id,
            listener,
            router,
            fast: None,
            front: None,
            shutdown,
            grace: Duration::from_millis(settings.shutdown_grace_ms),
        })
    }

    /// Adds routes to a built service, e.g. a test's own slow handler for watching graceful
    /// shutdown. They are served by the same server but bypass the platform middleware.
    pub fn merge_routes(mut self, routes: Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// Serves `fast` in front of the router (see [`crate::ServiceApp::router_with_fast_path`]).
    pub fn with_fast_path(mut self, fast: crate::FastPath) -> Self {
        self.fast = Some(fast);
        self
    }

    /// Serves connections with lab-http's own HTTP/1 server (`front.rs`), `fast` answering its
    /// own requests before the router.
    pub fn with_front<F: crate::Fast>(mut self, fast: std::sync::Arc<F>) -> Self {
        self.front = Some(crate::front::server(fast));
        self
    }

    /// `http://127.0.0.1:<port>`
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves until the shutdown token is cancelled, then drains within the grace period.
    pub async fn run(self) -> std::io::Result<()> {
        tracing::info!(addr = %self.addr, instance = %self.instance_id, "listening");
        // Turns every handler into its finished route (its layers applied) once, here. Served
        // as a plain tower service, as `serve` does, a router left as it is builds each
        // handler's route and its layers again for every request: ~20 % of a proxied read's
        // instructions in the BFF (callgrind, docs/BENCHMARKS.md, `lab bench bff`, session 6).
        // `axum::serve(listener, router)` does the same per connection.
        let router = self.router.with_state(());
        if let Some(serve) = self.front {
            return serve(self.listener, router, self.shutdown, self.grace).await;
        }
        match self.fast {
            Some(fast) => {
                let front = crate::fast::Front { fast, router };
                crate::serve(self.listener, front, self.shutdown, self.grace).await
            }
            None => crate::serve(self.listener, router, self.shutdown, self.grace).await,
        }
    }
}
