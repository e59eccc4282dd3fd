//! Chaos: what the BFF exposes of it. [`faults`] injects HTTP-level faults on the BFF → service
//! edges (shared by every replica through Redis, each expiring by itself); [`invariants`] judges a run from the services' own data,
//! with the checks across two services in `cross`.

mod cross;
pub mod faults;
pub mod invariants;
