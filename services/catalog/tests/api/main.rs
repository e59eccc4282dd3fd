//! Integration tests of the catalog service: the real service in-process on port 0, against real
//! PostgreSQL, Redis and RabbitMQ, each test with its own database and Redis prefix.

mod faults;
mod health;
mod helpers;
mod schema;
