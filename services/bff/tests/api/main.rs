//! Integration tests of the BFF: the real gateway in-process on port 0, in front of real catalog
//! instances, against real PostgreSQL, Redis and RabbitMQ.

mod cluster_health;
mod faults;
mod health;
mod helpers;
mod proxy;
mod resilience;
mod security;
mod stub;
