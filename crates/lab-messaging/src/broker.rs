//! One supervised AMQP connection per process.
//!
//! A supervisor task connects, watches the connection, and reconnects with backoff after the
//! broker restarts or the network drops. Callers take the current connection (or learn why there
//! is none) and open their own channels on it; they re-open them after a reconnect.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::AmqpSettings;

/// Reconnect backoff: first retry soon (a broker restart takes ~10 s here), then at most every
/// 5 s so a long outage does not spin.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the supervisor checks that the connection is still up.
const WATCH_EVERY: Duration = Duration::from_millis(250);

/// One supervised AMQP connection.
#[derive(Clone)]
pub struct Broker {
    /// The live connection, or none while (re)connecting.
    current: Arc<ArcSwapOption<Connection>>,
    /// Why the last connection attempt failed, for readiness reports.
    last_error: Arc<Mutex<String>>,
    /// The supervisor task, awaited by [`Broker::stopped`].
    tracker: TaskTracker,
}

impl Broker {
    /// Starts the supervisor; it runs until `shutdown` and closes the connection then.
    pub fn start(settings: &AmqpSettings, name: &str, shutdown: CancellationToken) -> Self {
        let broker = Self {
            current: Arc::new(ArcSwapOption::empty()),
            last_error: Arc::new(Mutex::new("not connected yet".into())),
            tracker: TaskTracker::new(),
        };
        let url = settings.url.expose().to_owned();
        let name = name.to_owned();
        let supervisor = broker.clone();
        broker
            .tracker
            .spawn(async move { supervisor.supervise(url, name, shutdown).await });
        broker.tracker.close();
        broker
    }

    /// Resolves once the supervisor has stopped (after `shutdown`) and closed the connection.
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }

    /// The live connection, or the reason there is none.
    pub fn connection(&self) -> Result<Arc<Connection>, String> {
        match self.current.load_full() {
            Some(c) if c.status().connected() => Ok(c),
            _ => Err(self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()),
        }
    }

    fn set_error(&self, reason: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    async fn supervise(self, url: String, name: String, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let properties =
                ConnectionProperties::default().with_connection_name(name.clone().into());
            let attempt = tokio::select! {
                () = shutdown.cancelled() => break,
                r = Connection::connect(&url, properties) => r,
            };
            match attempt {
                Ok(conn) => {
                    tracing::info!("connected to RabbitMQ");
                    backoff = BACKOFF_MIN;
                    let conn = Arc::new(conn);
                    self.current.store(Some(conn.clone()));
                    loop {
                        tokio::select! {
                            () = shutdown.cancelled() => {
                                let _ = conn.close(200, "shutting down".into()).await;
                                return;
                            }
                            () = tokio::time::sleep(WATCH_EVERY) => {}
                        }
                        if !conn.status().connected() {
                            break;
                        }
                    }
                    self.current.store(None);
                    self.set_error("connection lost; reconnecting".into());
                    tracing::warn!("lost the RabbitMQ connection; reconnecting");
                }
                Err(e) => {
                    self.set_error(e.to_string());
                    tracing::debug!(error = %e, "RabbitMQ connection attempt failed");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        if let Some(conn) = self.current.swap(None) {
            let _ = conn.close(200, "shutting down".into()).await;
        }
    }
}
