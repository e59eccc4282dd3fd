//! Integration tests of the sandbox PSP: the real service in-process on port 0.

mod faults;
mod health;
mod helpers;
