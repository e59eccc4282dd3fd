//! Tests of the `lab` binary as a user runs it: real processes, real PostgreSQL, Redis and
//! RabbitMQ (the machine's shared servers, through the "existing servers" flags, except where a
//! test is about the private instances). Every test has its own data directory and ports, so they
//! run in parallel with each other and with the services' tests.

#![expect(
    clippy::unwrap_used,
    reason = "a test's helpers fail the test loudly; clippy's test allowance covers only #[test] fns"
)]

mod chaos;
mod reactions;
mod run_errors;
mod soak;
mod support;
mod up;
mod vault;
