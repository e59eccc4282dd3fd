//! The payments metrics, declared once here and registered into the application's
//! [`lab_telemetry::Metrics`].

use prometheus_client::metrics::counter::Counter;

/// Handles to the payments metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct PaymentsMetrics {
    /// Authorizations whose amount or currency differ from the session's
    /// (`payments_amount_mismatch_total`).
    pub amount_mismatch: Counter,
    /// Webhooks refused at ingress (bad signature, stale, unknown certificate).
    pub webhooks_refused: Counter,
    /// Webhooks that repeated an event already recorded.
    pub webhooks_duplicate: Counter,
}

impl PaymentsMetrics {
    /// Fresh metrics registered into `registry`; call once per application.
    pub fn register(registry: &lab_telemetry::Metrics) -> Self {
        let m = Self::default();
        registry.register(
            "payments_amount_mismatch",
            "Authorizations for an amount or currency other than the session's",
            m.amount_mismatch.clone(),
        );
        registry.register(
            "payments_webhooks_refused",
            "Webhooks refused before anything was recorded",
            m.webhooks_refused.clone(),
        );
        registry.register(
            "payments_webhooks_duplicate",
            "Webhooks repeating an event already recorded",
            m.webhooks_duplicate.clone(),
        );
        m
    }
}
