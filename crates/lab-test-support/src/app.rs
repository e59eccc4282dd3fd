//! One service running in-process on a port of its own, with a client to call it.

use std::net::SocketAddr;
use std::time::Duration;

use lab_http::Application;
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestEnv;

/// How long a condition polled through HTTP may take to hold: a service's first AMQP connection
/// takes milliseconds, noticing a dependency going or returning takes up to a probe timeout (2 s)
/// plus a reconnect backoff (up to 2 s for Redis), so this only trips on a real failure.
pub const READY_DEADLINE: Duration = Duration::from_secs(20);

/// A service serving on `127.0.0.1:<free port>` until this value is dropped or shut down.
pub struct TestApp {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    /// Its `X-Instance-Id`.
    pub instance_id: String,
    /// A client for calling it (no proxy, no redirects followed).
    pub client: reqwest::Client,
    /// The test's infrastructure; kept alive at least as long as the app.
    pub env: TestEnv,
    /// Cancelled on drop: stops the server and the service's background tasks.
    shutdown: CancellationToken,
    /// The server task, awaited by [`TestApp::shutdown`].
    server: Option<JoinHandle<std::io::Result<()>>>,
}

/// A client for tests: no proxy from the environment can capture loopback calls, and redirects
/// are the test's to see.
pub fn test_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|e| panic!("building the test HTTP client: {e}"))
}

impl TestApp {
    /// Serves an already built application; `shutdown` must be the token it was built with.
    pub fn start(app: Application, shutdown: CancellationToken, env: TestEnv) -> Self {
        let addr = app.addr;
        let base_url = app.base_url();
        let instance_id = app.instance_id.clone();
        let server = tokio::spawn(app.run());
        Self {
            addr,
            base_url,
            instance_id,
            client: test_client(),
            env,
            shutdown,
            server: Some(server),
        }
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// `GET path`, panicking only if the request cannot be sent at all.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on {}: {e}", self.instance_id))
    }

    /// `GET path` as status and JSON body (`Null` when the body is not JSON).
    pub async fn get_json(&self, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self.get(path).await;
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Polls `/readyz` until it says `ready`, returning the report; panics with the last report
    /// when the deadline passes.
    pub async fn wait_ready(&self) -> Value {
        self.wait_readyz(|body| body["status"] == "ready").await
    }

    /// Polls `/readyz` until `accept` holds for its body, returning that body; panics with the
    /// last body when the deadline passes.
    pub async fn wait_readyz(&self, accept: impl Fn(&Value) -> bool) -> Value {
        self.wait_json("/readyz", accept).await
    }

    /// Polls `GET path` until `accept` holds for its JSON body, returning that body; panics with
    /// the last body after [`READY_DEADLINE`]. Bounded polling instead of sleeps: the test goes
    /// on as soon as the condition holds.
    pub async fn wait_json(&self, path: &str, accept: impl Fn(&Value) -> bool) -> Value {
        let until = tokio::time::Instant::now() + READY_DEADLINE;
        loop {
            let (_, body) = self.get_json(path).await;
            if accept(&body) {
                return body;
            }
            if tokio::time::Instant::now() >= until {
                panic!(
                    "{}'s {path} never matched within {READY_DEADLINE:?}; last: {body:#}",
                    self.instance_id
                );
            }
            tokio::time::sleep(crate::poll::POLL_EVERY).await;
        }
    }

    /// The token that stops this app (for tests that start shutdown themselves).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts shutdown and waits until the server has drained.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        match self.server.take() {
            Some(server) => server
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            None => Ok(()),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
