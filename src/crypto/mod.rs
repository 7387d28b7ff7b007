//! Cryptography: circuit handshakes (ntor, ntor-v3, CREATE_FAST), KDFs, and tor1 relay crypto.

// Sans-IO (docs/architecture.md "Sans-IO rule"): no clocks, sockets, threads or OS
// randomness. (Unsafe stays allowed here: the SIMD back ends of `relay` need it.)
#![cfg_attr(not(test), deny(clippy::disallowed_methods, clippy::disallowed_types))]

pub mod handshake;
pub mod ids;
pub mod keymat;
pub mod relay;
