//! Chaos: what the BFF exposes of it. [`invariants`] judges a run from the services' own data,
//! with the checks across two services in `cross`.

mod cross;
pub mod invariants;
