//! Sans-IO channel, circuit, stream and flow-control state machines.

// No unsafe here; and, sans-IO (docs/architecture.md "Sans-IO rule"), no clocks, sockets,
// threads or OS randomness: the caller passes them in.
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod channel;
pub mod circpad;
pub mod circuit;
pub mod conflux;
pub mod flow;
pub mod hs;
pub mod slab;
pub mod stream;
pub mod tls_record;
