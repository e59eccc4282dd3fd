//! The outbound client stack every Lab caller shares (the BFF's proxy, payments → PSP, JWKS):
//! per-attempt and total timeouts, retries with jittered exponential back-off for requests that
//! are safe to repeat, inside a retry budget, and a circuit breaker per endpoint that also
//! ejects a failing replica from the round-robin.
//!
//! Failures are classified once ([`Failure`]) and mapped to the gateway's status in one table
//! ([`Failure::status`]). Breaker changes, retries and fail-fasts are typed [`ResilienceEvent`]s
//! on a broadcast channel; [`BreakerSnapshot`]s report the current state. Defaults and their
//! sources are in [`policy`].

mod breaker;
mod budget;
mod call;
mod events;
mod failure;
pub mod fault;
pub mod policy;
mod upstream;
mod window;

pub use breaker::{Breaker, BreakerSnapshot, Counters, Open, Permit};
pub use budget::RetryBudget;
pub use call::{Outcome, Replay, backoff, call};
pub use events::{BreakerState, Events, ResilienceEvent};
pub use failure::Failure;
pub use fault::{FaultError, FaultSlot, HttpFault};
pub use policy::{BreakerPolicy, BudgetPolicy, CallPolicy};
pub use upstream::Upstream;

#[cfg(test)]
mod tests;
