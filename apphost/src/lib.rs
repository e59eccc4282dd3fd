//! The apphost: `lab up`, `lab down`, `lab status`.
