//! Small shared helpers.

#![forbid(unsafe_code)]

pub mod hex;
pub mod spare;
