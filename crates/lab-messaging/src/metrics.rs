//! The messaging metrics of one application, declared once here and registered into its
//! [`lab_telemetry::Metrics`].

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

/// Handles to the messaging metrics; clones share the same series.
#[derive(Clone)]
pub struct MessagingMetrics {
    /// Outbox rows not yet published (as of the relay's last look).
    pub outbox_pending: Gauge,
    /// Age in seconds of the oldest unpublished outbox row; 0 when none.
    pub outbox_oldest_pending_age: Gauge<f64, AtomicU64>,
    /// Seconds from an outbox row being written (its transaction commits right after) to the
    /// broker confirming its publish.
    pub commit_to_publish: Histogram,
    /// Messages published by the relay.
    pub relayed: Counter,
    /// Failed deliveries sent to a retry queue.
    pub retries: Counter,
    /// Messages given up on and dead-lettered (handler failures and undecodable messages).
    pub dead_letters: Counter,
    /// Deliveries the inbox recognised as already applied.
    pub duplicates: Counter,
}

impl Default for MessagingMetrics {
    fn default() -> Self {
        Self {
            outbox_pending: Gauge::default(),
            outbox_oldest_pending_age: Gauge::default(),
            // 0.5 ms … ~16 s doubling: the goal is p99 < 20 ms, and a broker outage shows up in
            // the top buckets instead of overflowing.
            commit_to_publish: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
            relayed: Counter::default(),
            retries: Counter::default(),
            dead_letters: Counter::default(),
            duplicates: Counter::default(),
        }
    }
}

impl MessagingMetrics {
    /// Fresh metrics registered into `registry`; call once per application.
    pub fn register(registry: &lab_telemetry::Metrics) -> Self {
        let m = Self::default();
        registry.register(
            "messaging_outbox_pending",
            "Outbox rows not yet published",
            m.outbox_pending.clone(),
        );
        registry.register(
            "messaging_outbox_oldest_pending_age_seconds",
            "Age of the oldest unpublished outbox row",
            m.outbox_oldest_pending_age.clone(),
        );
        registry.register(
            "messaging_commit_to_publish_seconds",
            "From outbox commit to the broker's publish confirm",
            m.commit_to_publish.clone(),
        );
        registry.register(
            "messaging_relayed",
            "Messages published by the outbox relay",
            m.relayed.clone(),
        );
        registry.register(
            "messaging_retries",
            "Failed deliveries sent to a retry queue",
            m.retries.clone(),
        );
        registry.register(
            "messaging_dead_letters",
            "Messages dead-lettered",
            m.dead_letters.clone(),
        );
        registry.register(
            "messaging_duplicates",
            "Redeliveries the inbox recognised and skipped",
            m.duplicates.clone(),
        );
        m
    }

    /// Records one row's commit→publish latency.
    pub fn observe_latency(&self, latency: Duration) {
        self.commit_to_publish.observe(latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_metrics_render_in_prometheus_text() {
        let registry = lab_telemetry::Metrics::default();
        let m = MessagingMetrics::register(&registry);

        m.retries.inc();
        m.observe_latency(Duration::from_millis(3));

        let text = registry.render();
        assert!(text.contains("messaging_retries_total 1"), "{text}");
        assert!(text.contains("messaging_outbox_pending 0"), "{text}");
        assert!(
            text.contains("messaging_commit_to_publish_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("messaging_dead_letters_total 0"), "{text}");
    }
}
