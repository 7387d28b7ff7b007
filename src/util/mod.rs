//! Small shared helpers.

#![forbid(unsafe_code)]

pub mod copies;
pub mod hex;
pub mod spare;
