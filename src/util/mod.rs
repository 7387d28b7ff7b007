//! Small shared helpers.

#![forbid(unsafe_code)]

pub mod hex;
