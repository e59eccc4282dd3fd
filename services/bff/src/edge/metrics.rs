//! The edge's metrics, declared once here and registered into the BFF's registry.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// One rate-limit decision's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The route class, or `demo-bucket`.
    pub class: Cow<'static, str>,
    /// `allowed` or `refused`.
    pub outcome: Cow<'static, str>,
    /// `shared` (Redis) or `local`.
    pub mode: Cow<'static, str>,
}

/// What happened to one keyed mutating request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplayLabels {
    /// `kept`, `replayed`, `in_flight`, `mismatch`, `not_kept` (5xx or too large) or
    /// `unprotected` (Redis unreachable).
    pub outcome: Cow<'static, str>,
}

/// Handles to the edge metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct EdgeMetrics {
    /// Session cookies issued (first visits, and cookies that did not verify).
    pub sessions_issued: Counter,
    /// Rate-limit decisions by class, outcome and mode.
    pub rate_limit_decisions: Family<DecisionLabels, Counter>,
    /// 1 while the rate limiter keeps its buckets in process (Redis unreachable), else 0.
    pub rate_limit_local: Gauge,
    /// Keyed mutating requests by outcome.
    pub idempotency: Family<ReplayLabels, Counter>,
}

impl EdgeMetrics {
    /// Fresh metrics registered into `registry`; call once per application.
    pub fn register(registry: &lab_telemetry::Metrics) -> Self {
        let m = Self::default();
        registry.register(
            "bff_sessions_issued",
            "Session cookies issued",
            m.sessions_issued.clone(),
        );
        registry.register(
            "bff_rate_limit_decisions",
            "Rate-limit decisions by route class, outcome and where the bucket is kept",
            m.rate_limit_decisions.clone(),
        );
        registry.register(
            "bff_rate_limit_local",
            "1 while rate-limit buckets are kept in process because Redis is unreachable",
            m.rate_limit_local.clone(),
        );
        registry.register(
            "bff_idempotency_requests",
            "Requests with an Idempotency-Key by outcome",
            m.idempotency.clone(),
        );
        m
    }

    pub(crate) fn replay(&self, outcome: &'static str) {
        self.idempotency
            .get_or_create(&ReplayLabels {
                outcome: Cow::Borrowed(outcome),
            })
            .inc();
    }
}
