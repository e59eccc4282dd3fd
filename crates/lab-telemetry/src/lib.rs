//! Logging and metrics for every Lab process.
//!
//! Logs go to stderr through `tracing`; every line of a request carries the span fields the HTTP
//! layer opens (`request_id`, `instance`). Metrics live in a [`Metrics`] registry owned by each
//! application value, not in a process-global recorder, so that several services started in one
//! test process keep separate counts.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Installs the process's log subscriber once; later calls are no-ops, so tests may call it freely.
///
/// `LAB_LOG` takes an `EnvFilter` directive (default `info`); `LAB_LOG_FORMAT=json` switches to
/// JSON lines for log shippers.
pub fn init_logging() {
    let filter = EnvFilter::try_from_env("LAB_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LAB_LOG_FORMAT").is_ok_and(|v| v == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        // When stderr is gone (a pipe whose reader died, e.g. a killed `lab up`), the default
        // reports the failed write with `eprintln!`, which panics: the task that logged dies,
        // and if that was the signal handler, SIGTERM no longer stops the process.
        .log_internal_errors(false);
    // `try_init` fails only when a subscriber is already installed, which is what we want.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.compact().try_init()
    };
}

/// A Prometheus registry shared by the parts of one application.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Registration happens at start-up; encoding on each scrape. Neither is awaited while held.
    registry: Arc<Mutex<Registry>>,
}

impl Metrics {
    /// Registers a metric under `name`; call at start-up with a metric type declared once.
    pub fn register<M>(&self, name: &str, help: &str, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .register(name, help, metric);
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}
