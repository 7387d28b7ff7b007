//! Command-line subcommands of the `fors` binary.

#![forbid(unsafe_code)]

pub mod bench_crypto;
pub mod fingerprint;
pub mod keygen_family;
pub mod probe;
pub mod tune;
