//! lab-auth against real infrastructure: a JWKS served over HTTP by an in-test server standing in
//! for identity, and revocations through real Redis (shared with a prefix, or private to stop
//! and start).

mod helpers;
mod keys;
mod revocation;
