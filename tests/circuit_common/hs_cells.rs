//! Onion-service cells and keys for tests, with no harness behind them (so the node tests,
//! which use `node_harness`, share them too): seeds, ESTABLISH_INTRO and INTRODUCE1 as a
//! C tor service and client build them, end-to-end keys, keys and cookies with a given
//! home shard.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::proto::circuit::CircuitConfig;
use fors::proto::hs::cells::Introduce1;
use fors::proto::hs::home_shard;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded generator for `test`, the seed printed; `FORS_TEST_SEED` replays one.
pub fn seeded(test: &str) -> StdRng {
    StdRng::seed_from_u64(fors_testkit::test_seed(test))
}

/// An ESTABLISH_INTRO as a C tor service builds it, MAC keyed with `kh`.
pub fn establish_intro(sk: &SigningKey, kh: &[u8; 20]) -> Vec<u8> {
    fors_testkit::hs::establish_intro(sk, kh).unwrap()
}

/// An INTRODUCE1 for `sk`'s service with this encrypted part.
pub fn intro1(sk: &SigningKey, encrypted: &[u8]) -> Vec<u8> {
    let mut b = [0u8; 498];
    let n = Introduce1::encode(sk.verifying_key().as_bytes(), &[], encrypted, &mut b).unwrap();
    b[..n].to_vec()
}

pub fn random_keys(rng: &mut StdRng) -> Tor1KeyMaterial {
    let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
    rng.fill(&mut k[..]);
    Tor1KeyMaterial::from_kdf_output(&k)
}

/// The same keys seen from the other end (the service's side of the end-to-end hop).
pub fn reversed(k: &Tor1KeyMaterial) -> Tor1KeyMaterial {
    let mut out = k.clone();
    out.df = k.db;
    out.db = k.df;
    out.kf = k.kb;
    out.kb = k.kf;
    out
}

/// A service key whose home table is on shard `home` of two (drawn until one is; keys
/// are uniformly spread, so a few draws do).
pub fn key_with_home(rng: &mut StdRng, home: usize) -> SigningKey {
    for _ in 0..1000 {
        let sk = SigningKey::from_bytes(&rng.gen());
        if home_shard(
            sk.verifying_key().as_bytes(),
            2,
            &CircuitConfig::for_tests().home_key,
        ) == home
        {
            return sk;
        }
    }
    panic!("no key with home {home} in 1000 draws");
}

/// A rendezvous cookie whose home table is on shard `home` of two.
pub fn cookie_with_home(rng: &mut StdRng, home: usize) -> [u8; 20] {
    for _ in 0..1000 {
        let c: [u8; 20] = rng.gen();
        if home_shard(&c, 2, &CircuitConfig::for_tests().home_key) == home {
            return c;
        }
    }
    panic!("no cookie with home {home} in 1000 draws");
}
