//! The fault proxy against real sockets on loopback (and the real PostgreSQL): each fault kind
//! injected and its effect observed, the registry's scopes, expiry and events, and validation.

mod bench;
mod chaos;
mod faults;
mod helpers;
mod postgres;
mod validation;
