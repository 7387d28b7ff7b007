//! Onion-service relay messages: every parser on any body (re-encoding what parses), and
//! the intro/rendezvous point tables driven by a sequence of messages on a few circuits.
#![no_main]
use std::time::{Duration, Instant};

use fors::keys::Ed25519Keypair;
use fors::proto::hs::cells::{encode_establish_intro, DosExtension, EXT_TYPE_DOS};
use fors::proto::hs::cells::{
    parse_establish_rendezvous, parse_intro_established, EstablishIntro, Extension, Introduce1,
    IntroduceAck, Rendezvous1,
};
use fors::proto::hs::intro::{IntroDosParams, IntroPoint, Introduce1Outcome};
use fors::proto::hs::rend::{RendPoint, Rendezvous1Outcome};
use fors::proto::hs::verify::{hs_mac, verify_establish_intro, ESTABLISH_INTRO_SIG_PREFIX};
use fors::proto::hs::{CircFacts, HsCircState};
use libfuzzer_sys::fuzz_target;

const KH: [u8; 20] = [7; 20];

fn parsers(body: &[u8]) {
    if let Ok(c) = EstablishIntro::parse(body) {
        let _ = verify_establish_intro(&c, &KH);
        let _ = c.dos_extension();
        assert!(c.sig_covered.len() > c.mac_covered.len());
    }
    if let Ok(c) = Introduce1::parse(body) {
        let exts: Vec<Extension<'_>> = c.extensions.iter().collect();
        let mut out = vec![0u8; body.len()];
        let n = Introduce1::encode(c.auth_key, &exts, c.encrypted, &mut out).unwrap();
        assert_eq!(&out[..n], body);
    }
    if let Ok(a) = IntroduceAck::parse(body) {
        assert_eq!(a.extensions.iter().count(), a.extensions.len());
    }
    let _ = parse_intro_established(body);
    let _ = parse_establish_rendezvous(body);
    if let Ok(r) = Rendezvous1::parse(body) {
        let mut out = vec![0u8; body.len()];
        let n = Rendezvous1::encode(r.cookie, r.handshake_info, &mut out).unwrap();
        assert_eq!(&out[..n], body);
    }
}

/// A valid ESTABLISH_INTRO for service `k` of four, with DoS parameters from `p`: without
/// it the fuzzer could never get past the signature to the table and its buckets.
fn valid_establish_intro(k: u8, p: &[u8], out: &mut [u8]) -> usize {
    let kp = Ed25519Keypair::from_expanded(&[k % 4 + 1; 64]);
    let num = |i: usize| p.get(i).copied().unwrap_or(0) as u64;
    let mut f = [0u8; 32];
    let n = DosExtension::encode_field(&[(1, num(0)), (2, num(1))], &mut f).unwrap();
    let ext = [Extension {
        field_type: EXT_TYPE_DOS,
        field: &f[..n],
    }];
    let exts = if p.len() > 1 { &ext[..] } else { &[] };
    encode_establish_intro(
        kp.public().as_bytes(),
        exts,
        |m| hs_mac(&KH, m),
        |m| {
            kp.sign(&[ESTABLISH_INTRO_SIG_PREFIX, m].concat())
                .to_bytes()
        },
        out,
    )
    .unwrap()
}

fn valid_introduce1(k: u8, encrypted: &[u8], out: &mut [u8]) -> usize {
    let kp = Ed25519Keypair::from_expanded(&[k % 4 + 1; 64]);
    let enc = if encrypted.is_empty() {
        &[1u8][..]
    } else {
        encrypted
    };
    Introduce1::encode(kp.public().as_bytes(), &[], enc, out).unwrap()
}

fuzz_target!(|data: &[u8]| {
    parsers(data);

    // Then: records of `circ (1) | flags (1) | cmd (1) | len (1) | body`, at most 64.
    let t0 = Instant::now();
    let mut ip = IntroPoint::<u8>::new(4, IntroDosParams::default(), t0);
    let mut rp = RendPoint::<u8>::new(4);
    let mut states = [HsCircState::default(); 8];
    let mut rest = data;
    for step in 0..64u64 {
        let [circ, flags, cmd, len, tail @ ..] = rest else {
            break;
        };
        let body = &tail[..(*len as usize).min(tail.len())];
        rest = &tail[body.len()..];
        let circ = circ % 8;
        let facts = CircFacts {
            is_last_hop: flags & 1 == 0,
            from_client_channel: flags & 2 != 0,
        };
        let now = t0 + Duration::from_secs(step);
        let st = &mut states[circ as usize];
        let mut made = [0u8; 600];
        let valid = flags & 16 != 0;
        match cmd % 5 {
            0 => {
                let body = if valid {
                    let n = valid_establish_intro(*len, body, &mut made);
                    &made[..n]
                } else {
                    body
                };
                ip.on_establish_intro(circ, st, facts, body, &KH, now);
            }
            1 => {
                let body = if valid {
                    let n = valid_introduce1(*len, body, &mut made);
                    &made[..n]
                } else {
                    body
                };
                if let Introduce1Outcome::Forward { .. } = ip.on_introduce1(st, facts, body, now) {
                    ip.introduce2_sent(flags & 4 == 0);
                }
            }
            2 => {
                rp.on_establish_rendezvous(circ, st, facts, flags & 8 != 0, body);
            }
            3 => {
                if let Rendezvous1Outcome::Join { client, cookie, .. } =
                    rp.on_rendezvous1(st, facts, body)
                {
                    if client != circ {
                        let mut s = states[circ as usize];
                        let mut c = states[client as usize];
                        rp.joined(&cookie, &mut c, &mut s, flags & 4 == 0);
                        states[circ as usize] = s;
                        states[client as usize] = c;
                    }
                }
            }
            _ => {
                let st = *st;
                ip.on_circuit_closed(circ, &st);
                rp.on_circuit_closed(circ, &st, fors::cell::chan::DestroyReason::Finished);
                states[circ as usize] = HsCircState::default();
            }
        }
        assert!(ip.len() <= ip.capacity());
        assert!(rp.len() <= rp.capacity());
    }
});
