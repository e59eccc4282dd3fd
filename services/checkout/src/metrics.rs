//! The orchestrator's metrics, declared once here and registered into the service's registry
//! (`/metrics`): how sagas move, what they ignore, and how many deadlines fire.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::orchestrator::Outcome;

/// Handles to the saga metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct SagaMetrics {
    /// Applied steps, labelled with the state each led to (`to="Completed"`).
    pub steps: Family<Vec<(String, String)>, Counter>,
    /// Events recorded and ignored: late, duplicate or out of order.
    pub ignored: Counter,
    /// Deadlines that fired (applied or found stale).
    pub deadlines_fired: Counter,
}

impl SagaMetrics {
    /// Fresh metrics registered into `registry`; call once per application.
    pub fn register(registry: &lab_telemetry::Metrics) -> Self {
        let m = Self::default();
        registry.register(
            "saga_steps",
            "Saga steps applied, by the state they led to",
            m.steps.clone(),
        );
        registry.register(
            "saga_events_ignored",
            "Saga events recorded and ignored (late, duplicate, out of order)",
            m.ignored.clone(),
        );
        registry.register(
            "saga_deadlines_fired",
            "Saga deadlines that fired",
            m.deadlines_fired.clone(),
        );
        m
    }

    /// Counts one step's outcome.
    pub fn observe(&self, outcome: &Outcome) {
        match outcome {
            Outcome::Applied { to, .. } => {
                self.steps
                    .get_or_create(&vec![("to".to_owned(), to.as_str().to_owned())])
                    .inc();
            }
            Outcome::Ignored(_) => {
                self.ignored.inc();
            }
            Outcome::UnknownSaga => {}
        }
    }
}
