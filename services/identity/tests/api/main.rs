//! Integration tests of the identity service: the real service in-process on port 0, against real
//! PostgreSQL, Redis and OpenBao, each test with its own database, Redis prefix and OpenBao; and
//! lab-auth as another service uses it.

mod accounts;
mod faults;
mod health;
mod helpers;
mod keys;
mod refusals;
mod schema;
mod sessions;
mod throttling;
