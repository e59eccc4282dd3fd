//! Integration tests of the orders service: the real service in-process on port 0, against real
//! PostgreSQL and RabbitMQ (and a real catalog for prices), each test with its own database.

// A failed unwrap in a test is the test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is a failed assertion"
)]

mod claims;
mod demo_routes;
mod end_to_end;
mod faults;
mod health;
mod helpers;
mod invariants;
mod orders;
mod saga;
mod schema;
mod tokens;
