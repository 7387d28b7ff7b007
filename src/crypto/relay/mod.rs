//! tor1 relay crypto: AES-128-CTR and SHA-1 running digests, batched (tor-spec "Routing relay
//! cells", "Relay cells"; C tor `relay_crypto_tor1.c`).
//!
//! Sans-IO and allocation-free per cell. The hot paths are:
//! * [`Tor1RelayCrypto::forward_batch`] / [`Tor1RelayCrypto::backward_relay_batch`]: one
//!   circuit, many cells, AES only for cells passing through (middle relay);
//! * [`originate_multi`] / [`forward_multi`]: one cell each of many circuits, which lets the
//!   SHA-1 running digests of different circuits share SIMD lanes (exit relay).
//!
//! Which AES and SHA-1 implementations run is chosen once per process from the CPU's features
//! (see [`cpu`]).

pub mod aes_ctr;
#[cfg(target_arch = "x86_64")]
mod aes_vaes256;
pub mod cgo;
mod client;
pub mod cpu;
mod multi;
pub mod sha1;
pub mod sha1_mb;
mod tor1;

#[cfg(test)]
mod tests;

pub use client::{Tor1ClientCircuit, Tor1ClientError, Tor1ClientLayer};
pub use multi::{
    forward_multi, forward_multi_indexed, forward_multi_jobs, forward_multi_with, originate_multi,
    originate_multi_indexed, originate_multi_jobs, originate_multi_with, CircuitCell, MultiJobs,
};
pub use tor1::{Tor1Direction, Tor1RelayCrypto};

/// Length of a relay cell body (a cell's payload): tor-spec `CELL_PAYLOAD_SIZE`.
pub const CELL_BODY_LEN: usize = 509;

/// One relay cell body, the unit relay crypto works on.
pub type CellBody = [u8; CELL_BODY_LEN];

/// Length of a tor1 SENDME v1 tag: the full running SHA-1 digest (tor-spec "SENDME").
pub const SENDME_TAG_LEN: usize = 20;

/// Offsets inside a v0 relay cell body (tor-spec "Relay cells").
pub(crate) const RECOGNIZED_OFFSET: usize = 1;
pub(crate) const DIGEST_OFFSET: usize = 5;
pub(crate) const DIGEST_LEN: usize = 4;

/// Whether a decrypted body has `recognized` == 0, the cheap first test before the digest.
#[inline]
pub(crate) fn recognized_is_zero(body: &CellBody) -> bool {
    body[RECOGNIZED_OFFSET] == 0 && body[RECOGNIZED_OFFSET + 1] == 0
}
