//! The identity metrics, declared once here and registered into the application's
//! [`lab_telemetry::Metrics`]: failed and throttled logins and refresh-token reuse are the
//! numbers a security dashboard watches.

use prometheus_client::metrics::counter::Counter;

/// Handles to the identity metrics; clones share the same series.
#[derive(Clone, Default)]
pub struct IdentityMetrics {
    /// Logins that issued a token pair.
    pub logins: Counter,
    /// Logins refused for a wrong password or an unknown email (not told apart, here either).
    pub logins_failed: Counter,
    /// Logins refused with 429 before the password was looked at.
    pub logins_throttled: Counter,
    /// Refresh tokens traded for the next pair.
    pub refreshes: Counter,
    /// Used refresh tokens presented again: each revoked a whole session.
    pub refresh_reuse: Counter,
    /// Signing key rotations.
    pub key_rotations: Counter,
}

impl IdentityMetrics {
    /// Fresh metrics registered into `registry`; call once per application.
    pub fn register(registry: &lab_telemetry::Metrics) -> Self {
        let m = Self::default();
        registry.register(
            "identity_logins",
            "Logins that issued tokens",
            m.logins.clone(),
        );
        registry.register(
            "identity_logins_failed",
            "Logins refused for wrong credentials (401)",
            m.logins_failed.clone(),
        );
        registry.register(
            "identity_logins_throttled",
            "Logins refused by throttling (429)",
            m.logins_throttled.clone(),
        );
        registry.register(
            "identity_refreshes",
            "Refresh tokens traded for a new pair",
            m.refreshes.clone(),
        );
        registry.register(
            "identity_refresh_reuse",
            "Used refresh tokens presented again (session revoked)",
            m.refresh_reuse.clone(),
        );
        registry.register(
            "identity_key_rotations",
            "Signing key rotations",
            m.key_rotations.clone(),
        );
        m
    }
}
