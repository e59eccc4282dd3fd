//! Chaos: what the BFF exposes of it. [`faults`] is `/api/chaos`: it injects HTTP-level faults on
//! the BFF → service edges (shared by every replica through Redis, each expiring by itself) and
//! lists them with the apphost's TCP and process faults, which [`relay`] passes on with the
//! caller's role; [`invariants`] judges a run from the services' own data, with the checks
//! across two services in `cross`.

mod cross;
pub mod faults;
pub mod invariants;
pub mod relay;
