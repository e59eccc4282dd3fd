//! RabbitMQ for Lab services.
//!
//! [`Broker`] keeps one AMQP connection per process alive: a supervisor task connects, watches the
//! connection, and reconnects with backoff after the broker restarts or the network drops. Callers
//! take the current connection (or learn why there is none); the readiness probe opens and closes
//! a real channel on it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use lab_config::SecretString;
use lapin::{Connection, ConnectionProperties};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

pub use lapin;

/// How a service reaches RabbitMQ.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`.
    pub url: SecretString,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: SecretString::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
        }
    }
}

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
}

impl Broker {
    /// Starts the supervisor; it runs until `shutdown` and closes the connection then.
    pub fn start(settings: &AmqpSettings, name: &str, shutdown: CancellationToken) -> Self {
        let broker = Self {
            current: Arc::new(ArcSwapOption::empty()),
            last_error: Arc::new(Mutex::new("not connected yet".into())),
        };
        let url = settings.url.expose().to_owned();
        let name = name.to_owned();
        let supervisor = broker.clone();
        tokio::spawn(async move { supervisor.supervise(url, name, shutdown).await });
        broker
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

/// Readiness probe: opens a real channel on the live connection and closes it again.
pub struct AmqpProbe(pub Broker);

impl lab_http::Probe for AmqpProbe {
    fn name(&self) -> &str {
        "rabbitmq"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let conn = self.0.connection()?;
            let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
            channel
                .close(200, "probe".into())
                .await
                .map_err(|e| e.to_string())
        })
    }
}
