//! Tests of the harness itself: what every service's tests rely on.

mod database;
mod infrastructure;
