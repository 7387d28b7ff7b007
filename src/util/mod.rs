//! Small shared helpers.

pub mod hex;
