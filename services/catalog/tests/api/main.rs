//! Integration tests of the catalog service: the real service in-process on port 0, against real
//! PostgreSQL, Redis and RabbitMQ, each test with its own database and Redis prefix.

// A failed unwrap in a test is the test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is a failed assertion"
)]

mod cache;
mod catalog;
mod credentials;
mod demos;
mod faults;
mod health;
mod helpers;
mod invariants;
mod messaging;
mod occ;
mod products;
mod schema;
mod stock;
mod tokens;
