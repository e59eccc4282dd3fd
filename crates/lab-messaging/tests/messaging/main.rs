//! Integration tests of lab-messaging on the real PostgreSQL and RabbitMQ, one test binary.
//! Each test has its own database (cloned by the harness) and its own AMQP name prefix.

mod batching;
mod consuming;
mod failures;
mod helpers;
mod lanes;
mod recovery;
mod relaying;
