//! Cryptography: circuit handshakes (ntor, ntor-v3, CREATE_FAST), KDFs, and tor1 relay crypto.

pub mod handshake;
pub mod ids;
pub mod keymat;
pub mod relay;
