//! Hand-run timing of the relay side of each handshake (not a pass/fail test):
//! `cargo test --release --lib handshake::timing -- --ignored --nocapture`.
//!
//! Medians measured with `fors bench-crypto` on the 2-vCPU Zen 4 build VM under load from
//! parallel builds (C tor: ~114 µs):
//! - dalek 4, AVX2 Edwards path: ntor 87 µs, ntor-v3 96 µs (two ladders: 121 µs).
//! - dalek 5, default build (runtime-selected AVX2): ntor 77 µs, ntor-v3 84 µs.
//! - dalek 5 built with `RUSTFLAGS='--cfg curve25519_dalek_backend="avx512"'` (AVX-512
//!   IFMA selected at run time, stable Rust): ntor 60 µs, ntor-v3 65 µs.

use std::time::Instant;

use super::{
    fast, negotiate_circ_params, ntor, ntor_v3, CircuitExtension, NtorKeyMap, NtorKeyPair,
};
use super::{ntor::NtorClient, ntor_v3::NtorV3Client, NtorV3ServerPolicy};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};

const N: usize = 2000;

/// Median of per-call times in µs, over `N` fresh client onionskins.
fn median_us(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[test]
#[ignore = "timing report; run by hand with --release"]
fn server_handshake_timing() {
    let mut rng = rand::thread_rng();
    let map = NtorKeyMap::new(
        NtorKeyPair::generate(&mut rng),
        Some(NtorKeyPair::generate(&mut rng)),
    );
    let rsa_id = RsaIdentity([7; 20]);
    let ed_id = Ed25519Identity([9; 32]);
    let policy = NtorV3ServerPolicy::default();

    let skins: Vec<_> = (0..N)
        .map(|_| NtorClient::start(&mut rng, &rsa_id, map.current().public()).1)
        .collect();
    let mut t = Vec::with_capacity(N);
    for s in &skins {
        let start = Instant::now();
        let r = ntor::server_handshake(&mut rng, &map, &rsa_id, s);
        t.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(r.is_ok());
    }
    println!(
        "ntor server handshake:    {:7.2} µs (median of {N})",
        median_us(t)
    );

    let skins: Vec<_> = (0..N)
        .map(|_| {
            NtorV3Client::start(
                &mut rng,
                &ed_id,
                map.current().public(),
                &[CircuitExtension::CcRequest],
            )
            .unwrap()
            .1
        })
        .collect();
    let mut t = Vec::with_capacity(N);
    for s in &skins {
        let start = Instant::now();
        let r = ntor_v3::server_handshake(&mut rng, &map, &ed_id, s, |e| {
            negotiate_circ_params(e, &policy)
        });
        t.push(start.elapsed().as_secs_f64() * 1e6);
        assert!(r.is_ok());
    }
    println!(
        "ntor-v3 server handshake: {:7.2} µs (median of {N})",
        median_us(t)
    );

    let mut t = Vec::with_capacity(N);
    for i in 0..N {
        let x = [i as u8; 20];
        let start = Instant::now();
        let r = fast::create_fast_server(&mut rng, &x);
        t.push(start.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(r);
    }
    println!(
        "CREATE_FAST server:       {:7.2} µs (median of {N})",
        median_us(t)
    );
}

#[test]
#[ignore = "timing report; run by hand with --release"]
fn primitive_timing() {
    use curve25519_dalek_5::{EdwardsPoint, MontgomeryPoint};
    use x25519_dalek::{PublicKey, StaticSecret};
    let mut rng = rand::thread_rng();
    let a = StaticSecret::random_from_rng(&mut rng);
    let p = PublicKey::from(&StaticSecret::random_from_rng(&mut rng));
    let time = |name: &str, f: &mut dyn FnMut()| {
        let mut t = Vec::with_capacity(N);
        for _ in 0..N {
            let start = Instant::now();
            f();
            t.push(start.elapsed().as_secs_f64() * 1e6);
        }
        println!("{name:32} {:7.2} µs (median)", median_us(t));
    };
    time("x25519 ladder", &mut || {
        std::hint::black_box(a.diffie_hellman(std::hint::black_box(&p)));
    });
    time("x25519 base mult", &mut || {
        std::hint::black_box(PublicKey::from(std::hint::black_box(&a)));
    });
    let bytes = a.to_bytes();
    let mp = MontgomeryPoint(*p.as_bytes());
    time("edwards decompress+mul+compress", &mut || {
        let e: EdwardsPoint = std::hint::black_box(mp).to_edwards(0).unwrap();
        std::hint::black_box(e.mul_clamped(bytes).to_montgomery());
    });
    let bytes2 = StaticSecret::random_from_rng(&mut rng).to_bytes();
    time("two muls, one decompress", &mut || {
        let e: EdwardsPoint = std::hint::black_box(mp).to_edwards(0).unwrap();
        std::hint::black_box(e.mul_clamped(bytes).to_montgomery());
        std::hint::black_box(e.mul_clamped(bytes2).to_montgomery());
    });
    time("two ladders", &mut || {
        std::hint::black_box(mp.mul_clamped(bytes));
        std::hint::black_box(mp.mul_clamped(bytes2));
    });
    let e = mp.to_edwards(0).unwrap();
    time("edwards mul only", &mut || {
        std::hint::black_box(std::hint::black_box(e).mul_clamped(bytes));
    });
    // The same multiplication on dalek 4 (the rest of the crate's curve library), for scale.
    let e4 = curve25519_dalek::MontgomeryPoint(mp.0)
        .to_edwards(0)
        .unwrap();
    time("edwards mul only (dalek 4)", &mut || {
        std::hint::black_box(std::hint::black_box(e4).mul_clamped(bytes));
    });
    assert_eq!(
        e.mul_clamped(bytes).to_montgomery().0,
        *a.diffie_hellman(&p).as_bytes()
    );
}
