//! Chaos: what the BFF exposes of it. [`invariants`] judges a run from the services' own data.

pub mod invariants;
