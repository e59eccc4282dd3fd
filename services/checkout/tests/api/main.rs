//! Integration tests of the checkout service: the real service in-process on port 0, against real
//! PostgreSQL and RabbitMQ, each test with its own database.

// A failed unwrap in a test is the test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is a failed assertion"
)]

mod crashes;
mod deadlines;
mod end_to_end;
mod faults;
mod health;
mod helpers;
mod invariants;
mod saga;
mod sagas;
mod schema;
mod with_catalog;
