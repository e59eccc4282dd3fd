//! Integration tests of the payments service: the real service in-process on port 0, against real
//! PostgreSQL and RabbitMQ, each test with its own database, beside an in-test PSP.

// A failed unwrap in a test is the test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is a failed assertion"
)]

mod admin;
mod commands;
mod faults;
mod health;
mod helpers;
mod invariants;
mod paypal_webhooks;
mod pki;
mod psp;
mod schema;
mod stand_in;
mod stripe_webhooks;
mod view;
