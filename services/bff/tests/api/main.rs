//! Integration tests of the BFF: the real gateway in-process on port 0, in front of real catalog
//! instances, against real PostgreSQL, Redis and RabbitMQ.

// A failed unwrap in a test is the test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is a failed assertion"
)]

mod authorized_demos;
mod breaker_demo;
mod chaos_faults;
mod cluster_health;
mod demos;
mod ejection;
mod faults;
mod health;
mod helpers;
mod idempotency_demo;
mod invariants;
mod live;
mod pages;
mod proxy;
mod rate_limit_demo;
mod rate_limits;
mod replays;
mod resilience;
mod security;
mod sessions;
mod stack;
mod stub;
mod wire;
