//! The apphost: `lab up`, `lab down`, `lab status` — Aspire's job done with native processes.
//!
//! `lab up` runs private PostgreSQL, Redis, RabbitMQ and OpenBao instances under `.lab/` (or uses
//! existing servers given by address), prepares the database and OpenBao, then starts every
//! service as `lab run <service>` of this binary in health-gated order, supervises them, and
//! serves a loopback control API that `lab status` (and later chaos) uses.
//!
//! Map: [`cluster`] brings the infrastructure up ([`infra`] has one module per server,
//! [`bootstrap`] the database set-up); [`plan`] is the topology and wiring; [`supervisor`] runs and
//! restarts processes; [`control`] is the control API; [`console`] and [`status`] print; [`soak`]
//! runs journeys under random faults against a running cluster and judges it.

pub mod bench;
pub mod bootstrap;
pub mod cluster;
pub mod console;
pub mod control;
pub mod datadir;
pub mod down;
pub mod edges;
pub mod faults;
pub mod infra;
pub mod plan;
pub mod ports;
pub mod proc;
pub mod soak;
pub mod status;
pub mod supervisor;
pub mod table;
pub mod up;

pub use down::{DownArgs, down};
pub use proc::{MARKER_ENV, PARENT_ENV};
pub use soak::{SoakArgs, soak};
pub use status::{StatusArgs, status};
pub use up::{UpArgs, up};
