//! The orders metrics, declared once here and registered into the application's
//! [`lab_telemetry::Metrics`]: how often idempotency did its job is the number worth watching.

use prometheus_client::metrics::counter::Counter;

/// Handles to the orders metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct OrdersMetrics {
    /// Orders written (each with its `OrderPlaced` event).
    pub placed: Counter,
    /// Repeats of an `Idempotency-Key` answered with the order it already placed.
    pub replayed: Counter,
    /// Repeats of a key with a different request, refused with 422.
    pub key_reused: Counter,
    /// `POST /claims` that took a claim (first writer, or an expired claim retaken).
    pub claims_created: Counter,
    /// `POST /claims` that found the claim already held.
    pub claims_repeated: Counter,
}

impl OrdersMetrics {
    /// Fresh metrics registered into `registry`; call once per application.
    pub fn register(registry: &lab_telemetry::Metrics) -> Self {
        let m = Self::default();
        registry.register("orders_placed", "Orders written", m.placed.clone());
        registry.register(
            "orders_replayed",
            "Idempotency-Key repeats answered with the order already placed",
            m.replayed.clone(),
        );
        registry.register(
            "orders_key_reused",
            "Idempotency-Key repeats with a different request (422)",
            m.key_reused.clone(),
        );
        registry.register(
            "orders_claims_created",
            "Claims taken (first writer or expired claim retaken)",
            m.claims_created.clone(),
        );
        registry.register(
            "orders_claims_repeated",
            "Claim attempts that found the claim held",
            m.claims_repeated.clone(),
        );
        m
    }
}
