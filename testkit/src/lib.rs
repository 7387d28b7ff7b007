//! The test kit: what Fors's integration tests (`tests/`), the load generator (`bench/`,
//! `fors-loadgen`) and the fuzz targets (`fuzz/`) share, so each exists once:
//!
//! * [`torrc`]: a typed torrc builder, one method per option family, for Fors and C tor;
//! * [`socks`]: a SOCKS5 client (RFC 1928/1929: CONNECT, RESOLVE) with timeouts and typed
//!   errors, for driving a C tor client's SocksPort;
//! * [`circuit`]: the client side of a circuit, sans-IO: CREATE_FAST / CREATE2 (ntor,
//!   ntor-v3), EXTEND2, relay cells built and parsed under tor1 client crypto (format v0) or,
//!   on hops whose ntor-v3 handshake asked for it, CGO (format v1), and the
//!   BEGIN/DATA/END/SENDME messages;
//! * [`hs`]: onion-service cells as a C tor service builds them (ESTABLISH_INTRO);
//! * [`identity`]: a relay's keys made in memory and the link context they give, for the
//!   channel tests and fuzz targets;
//! * [`cgo_ref`]: a plain reference of CGO's client side (AES-128), independent of
//!   `fors::crypto::relay::cgo`, to drive CGO circuits in tests and in `fors-loadgen`;
//! * [`tor1_ref`]: a plain reference tor1 (AES-128-CTR + running SHA-1), independent of
//!   `fors::crypto::relay`, to cross-check it.
//!
//! A workspace crate rather than a `fors::testkit` module: the relay binary stays free of
//! test-only code, and the kit may use what only tests need (blocking sockets) without that
//! code being part of the relay. Integration tests link it as a dev-dependency (one copy of
//! `fors`); unit tests inside `fors`'s `src/` cannot (they would see a second `fors`).

pub mod cgo_ref;
pub mod circuit;
pub mod hs;
pub mod identity;
pub mod socks;
pub mod tor1_ref;
pub mod torrc;

/// The seed of a test's randomness: `FORS_TEST_SEED` if set (to replay a run), else a fresh
/// one; printed either way, so a failure names the seed that replays it.
pub fn test_seed(test: &str) -> u64 {
    use rand::RngCore;
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().next_u64());
    println!("{test}: seed {seed} (FORS_TEST_SEED={seed} replays it)");
    seed
}
