//! Integration tests of the checkout service: the real service in-process on port 0, against real
//! PostgreSQL and RabbitMQ, each test with its own database.

mod faults;
mod health;
mod helpers;
mod schema;
