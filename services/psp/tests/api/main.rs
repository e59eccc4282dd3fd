//! Integration tests of the sandbox PSP: the real service in-process on port 0, its webhooks
//! sent to a receiver of the test's own.

// A failed unwrap in a test is the test failing, with the value in the message.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a panic is a failed assertion"
)]

mod bad_input;
mod faults;
mod health;
mod helpers;
mod knobs;
mod page;
mod paypal;
mod retries;
mod settings;
mod signatures;
mod stripe;
