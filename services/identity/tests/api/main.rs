//! Integration tests of the identity service: the real service in-process on port 0, against real
//! PostgreSQL and Redis, each test with its own database and Redis prefix.

mod faults;
mod health;
mod helpers;
mod schema;
