//! Conflux at the exit (prop 329, torspec "Conflux"; C tor 0.4.9 `conflux.c`,
//! `conflux_pool.c`, `conflux_cell.c`), sans-IO.
//!
//! A client links two or more circuits ending at this exit into one *set* named by a random
//! nonce, then spreads a stream's cells over them. Each multiplexed cell carries an implicit
//! absolute sequence number: its leg's counter plus one, where CONFLUX_SWITCH moves a leg's
//! counter forward. The exit delivers cells in sequence order, holding early ones in a
//! bounded out-of-order queue, and chooses which leg its own cells go out on.
//!
//! [`cells`] parses and builds the four conflux messages; [`set`] holds the sets of one
//! shard; [`cross`] joins legs whose circuits are on different shards (a set's owner shard,
//! remote legs, the nonce directory on the home shard). Nothing here touches sockets, clocks or other shards: see `docs/architecture.md`
//! "Conflux at the exit" for what the node must do with the decisions.

pub mod cells;
pub mod cross;
pub mod set;

pub use cells::{ConfluxCellError, DesiredUx, Link, Nonce, Switch};
pub use set::{
    Alg, ConfluxSets, ConfluxStats, Inbound, LegFacts, LegId, LegSendState, Limits, Linked,
    RefuseWhy, Refused, SendChoice, SetKey, Teardown,
};

use crate::cell::relay::RelayCmd;

/// Whether `cmd` is sequenced across a set's legs (C tor `conflux_should_multiplex`):
/// stream commands whose order matters. Circuit-specific commands, SENDMEs and the conflux
/// commands themselves stay on their own leg; unknown commands are not multiplexed.
pub const fn should_multiplex(cmd: RelayCmd) -> bool {
    matches!(
        cmd,
        RelayCmd::BEGIN
            | RelayCmd::DATA
            | RelayCmd::END
            | RelayCmd::CONNECTED
            | RelayCmd::RESOLVE
            | RelayCmd::RESOLVED
            | RelayCmd::XOFF
            | RelayCmd::XON
    )
}

/// The per-process key of [`home_shard`]: drawn once at start-up by the relay (it is not
/// sans-IO code; see `relay::shardcfg::circuit_config`) and given to every shard's core, so
/// all shards compute the same home for a nonce while a client cannot predict it.
///
/// There is no `Default`: a default would be a constant anyone can read here, and a core
/// built with it would let clients aim LINKs at one shard (review finding L8). Every key is
/// made explicitly: [`HomeKey::new`] or [`HomeKey::from_rng`] from secret random bits, or
/// [`HomeKey::for_tests`] where a test needs one it can reproduce.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HomeKey([u64; 2]);

impl HomeKey {
    /// A key from 128 random bits (the caller draws them).
    pub const fn new(k0: u64, k1: u64) -> HomeKey {
        HomeKey([k0, k1])
    }

    /// A key drawn from `rng` (sans-IO: the caller passes its RNG; the relay uses the OS's).
    pub fn from_rng(rng: &mut impl rand::RngCore) -> HomeKey {
        HomeKey([rng.next_u64(), rng.next_u64()])
    }

    /// A key derived from `seed` (SplitMix64), for tests and tools that need the same
    /// homes on every run. Not secret: a relay never runs with one (its key comes from
    /// `relay::shardcfg::circuit_config`, which tests check).
    pub const fn for_tests(seed: u64) -> HomeKey {
        const fn splitmix64(x: u64) -> u64 {
            let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        let k0 = splitmix64(seed);
        HomeKey([k0, splitmix64(k0)])
    }
}

impl std::fmt::Debug for HomeKey {
    // The key is what keeps homes unpredictable: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HomeKey(..)")
    }
}

/// The shard that owns the set named by `nonce` (review finding L8): legs of one set may
/// arrive on any shard, and each forwards its LINK and sequenced cells to this one. The
/// client chooses the nonce, so an unkeyed function (say the nonce modulo the shard count)
/// would let it aim every LINK at one shard's bounded directory; SipHash-2-4 keyed with the
/// relay's secret [`HomeKey`] spreads any nonce set the client can choose.
pub fn home_shard(nonce: &Nonce, shards: usize, key: &HomeKey) -> usize {
    (siphash24(key, nonce) % shards.max(1) as u64) as usize
}

/// SipHash-2-4 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012) of `msg`.
/// std's keyed SipHasher is deprecated and its `RandomState` cannot take a given key (every
/// shard needs the same one, and tests need fixed ones), so it is written out here.
pub(crate) fn siphash24(key: &HomeKey, msg: &[u8]) -> u64 {
    #[inline(always)]
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13) ^ v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16) ^ v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21) ^ v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17) ^ v[2];
        v[2] = v[2].rotate_left(32);
    }
    let [k0, k1] = key.0;
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let m = u64::from_le_bytes(w);
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    let m = u64::from_le_bytes(last) | ((msg.len() as u64 & 0xff) << 56);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod home_key_tests {
    use super::*;
    use rand::SeedableRng;

    /// Keys are made only explicitly: one drawn from an RNG depends on it (two seeds, two
    /// keys, and the homes they give differ), a test key is the same for the same seed.
    #[test]
    fn home_keys_come_from_the_caller() {
        let seed: u64 = std::env::var("FORS_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        println!("home_keys_come_from_the_caller: seed {seed} (rerun with FORS_TEST_SEED={seed})");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let a = HomeKey::from_rng(&mut rng);
        let b = HomeKey::from_rng(&mut rng);
        assert_ne!(a, b);
        let again = HomeKey::from_rng(&mut rand::rngs::StdRng::seed_from_u64(seed));
        assert_eq!(a, again, "the caller's RNG decides the key");
        assert_eq!(HomeKey::for_tests(seed), HomeKey::for_tests(seed));
        assert_ne!(HomeKey::for_tests(seed), HomeKey::for_tests(seed ^ 1));
        // Different keys put nonces on different homes (64 nonces over 8 shards).
        let homes =
            |k: &HomeKey| -> Vec<usize> { (0..64u8).map(|i| home_shard(&[i; 32], 8, k)).collect() };
        assert_ne!(homes(&a), homes(&b));
        assert_eq!(format!("{a:?}"), "HomeKey(..)", "never printed");
    }
}

#[cfg(test)]
mod cross_tests;
