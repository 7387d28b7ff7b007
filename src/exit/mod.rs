//! Exit-side logic: exit policy and DNS.

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod dns;
pub mod policy;
