//! Test support for anything that needs a real DNS resolver (exit DNS, exit streams).
//!
//! Use from a test file with `mod dns_common;` and `dns_common::Unbound::start(..)`.

#![allow(dead_code, unused_imports)]

pub mod unbound;

pub use unbound::{Unbound, FORS_TEST_ZONE, UNBOUND_BIN};
