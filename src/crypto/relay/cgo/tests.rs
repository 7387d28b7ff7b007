//! CGO tests: every published known-answer vector (ET, PRF, UIV+, UIV+ key update, relay
//! forward/backward, relay originate, client originate), then seeded random round trips
//! client -> middle -> exit and back for AES-128 and AES-256, tamper detection, and the
//! batched entry points against one-cell calls.
#![forbid(unsafe_code)]

use super::client::{ClientCircuit, ClientDirection};
use super::et::Et;
use super::prf::Prf;
use super::uiv::Uiv;
use super::vector_types::State;
use super::*;
use crate::crypto::handshake::kdf::ShakeKdf;
use aes::{Aes128, Aes128Dec, Aes128Enc, Aes256Dec, Aes256Enc};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// RELAY and RELAY_EARLY (tor-spec "Cell commands"): the two commands CGO cells carry.
const RELAY: u8 = 3;
const RELAY_EARLY: u8 = 9;

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn arr<const N: usize>(s: &str) -> [u8; N] {
    unhex(s).try_into().expect("vector field length")
}

fn body_of(tag: &str, msg: &str) -> CellBody {
    let mut b = [0u8; CELL_BODY_LEN];
    b[..CGO_TAG_LEN].copy_from_slice(&unhex(tag));
    b[CGO_TAG_LEN..].copy_from_slice(&unhex(msg));
    b
}

/// A seed from `FORS_TEST_SEED` or the clock, printed so that a failure can be replayed.
fn test_rng(name: &str) -> StdRng {
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("{name}: seed {seed} (set FORS_TEST_SEED={seed} to replay)");
    StdRng::seed_from_u64(seed)
}

#[test]
fn et_known_answers() {
    assert_eq!(vectors::ET.len(), 20);
    for (i, v) in vectors::ET.iter().enumerate() {
        let et = Et::<Aes128>::new(&unhex(v.keys));
        let t = unhex(v.tweak);
        assert_eq!(t.len(), 16 + 1 + CGO_PAYLOAD_LEN);
        let h: Block16 = t[..16].try_into().unwrap();
        let x_r: [u8; CGO_PAYLOAD_LEN] = t[17..].try_into().unwrap();
        let mut block: Block16 = arr(v.block);
        if v.encrypt {
            et.encrypt(&h, t[16], &x_r, &mut block);
        } else {
            et.decrypt(&h, t[16], &x_r, &mut block);
        }
        assert_eq!(block, arr::<16>(v.expect), "ET vector {i}");
    }
}

#[test]
fn prf_known_answers() {
    assert_eq!(vectors::PRF.len(), 20);
    for (i, v) in vectors::PRF.iter().enumerate() {
        let prf = Prf::<Aes128Enc>::new(&unhex(v.keys));
        let x: Block16 = arr(v.input);
        let expect = unhex(v.expect);
        if v.t == 0 {
            let mut data = [0u8; CGO_PAYLOAD_LEN];
            prf.xor_t0(&x, &mut data);
            assert_eq!(&data[..], &expect[..], "PRF t=0 vector {i}");
        } else {
            assert_eq!(v.t, 1);
            let mut out = vec![0u8; expect.len()];
            prf.gen_t1(&x, &mut out);
            assert_eq!(out, expect, "PRF t=1 vector {i}");
        }
    }
}

#[test]
fn uiv_known_answers() {
    assert_eq!(vectors::UIV.len(), 12);
    for (i, v) in vectors::UIV.iter().enumerate() {
        let uiv = Uiv::<Aes128, Aes128Enc>::new(&unhex(v.keys));
        let h = unhex(v.tweak);
        let hb: Block16 = h[..16].try_into().unwrap();
        let mut body = body_of(v.x_l, v.x_r);
        if v.encrypt {
            uiv.encrypt(&hb, h[16], &mut body);
        } else {
            uiv.decrypt(&hb, h[16], &mut body);
        }
        assert_eq!(body, body_of(v.y_l, v.y_r), "UIV+ vector {i}");
    }
}

#[test]
fn uiv_update_known_answers() {
    assert_eq!(vectors::UIV_UPDATE.len(), 10);
    for (i, v) in vectors::UIV_UPDATE.iter().enumerate() {
        let mut uiv = Uiv::<Aes128Enc, Aes128Enc>::new(&unhex(v.keys));
        let mut nonce: Block16 = arr(v.nonce);
        uiv.update(&mut nonce);
        assert_eq!(uiv.key_bytes, unhex(v.new_keys), "UIV+ update keys {i}");
        assert_eq!(nonce, arr::<16>(v.new_nonce), "UIV+ update nonce {i}");
    }
}

fn relay_dir(s: &State) -> CgoRelayDirection<Aes128Enc> {
    let mut k = unhex(s.keys);
    k.extend(unhex(s.nonce));
    let mut d = CgoRelayDirection::<Aes128Enc>::new(&k).unwrap();
    d.tprime = arr(s.tprime);
    d
}

fn assert_state<EB, PB>(
    uiv: &Uiv<EB, PB>,
    nonce: &Block16,
    tprime: &Block16,
    s: &State,
    what: &str,
) {
    assert_eq!(uiv.key_bytes, unhex(s.keys), "{what}: keys");
    assert_eq!(nonce, &arr::<16>(s.nonce), "{what}: nonce");
    assert_eq!(tprime, &arr::<16>(s.tprime), "{what}: T'");
}

#[test]
fn relay_known_answers() {
    assert_eq!(vectors::RELAY.len(), 12);
    for (i, v) in vectors::RELAY.iter().enumerate() {
        let mut d = relay_dir(&v.state);
        let cmd = unhex(v.cmd)[0];
        let mut body = body_of(v.tag, v.msg);
        if v.inbound {
            d.backward(cmd, &mut body);
        } else {
            // None of the published forward vectors is addressed to the hop.
            assert_eq!(d.forward(cmd, &mut body), None, "relay vector {i}");
        }
        assert_eq!(body, body_of(v.tag_out, v.msg_out), "relay vector {i}");
        assert_state(
            &d.uiv,
            &d.nonce,
            &d.tprime,
            &v.new_state,
            &format!("relay vector {i}"),
        );
    }
}

#[test]
fn relay_originate_known_answers() {
    assert_eq!(vectors::RELAY_ORIGINATE.len(), 6);
    for (i, v) in vectors::RELAY_ORIGINATE.iter().enumerate() {
        let mut d = relay_dir(&v.state);
        let cmd = unhex(v.cmd)[0];
        // The tag slot's contents must not matter: originate overwrites it with N.
        let mut body = body_of("ffffffffffffffffffffffffffffffff", v.msg);
        let tag = d.originate(cmd, &mut body);
        assert_eq!(body, body_of(v.tag_out, v.msg_out), "originate vector {i}");
        assert_eq!(
            tag,
            arr::<16>(v.tag_out),
            "originate vector {i}: SENDME tag"
        );
        assert_state(
            &d.uiv,
            &d.nonce,
            &d.tprime,
            &v.new_state,
            &format!("originate vector {i}"),
        );
    }
}

#[test]
fn client_originate_known_answers() {
    assert_eq!(vectors::CLIENT_ORIGINATE.len(), 14);
    for (i, v) in vectors::CLIENT_ORIGINATE.iter().enumerate() {
        let mut hops: Vec<ClientDirection<Aes128Dec, Aes128Enc>> = v
            .states
            .iter()
            .map(|s| {
                let mut k = unhex(s.keys);
                k.extend(unhex(s.nonce));
                let mut d = ClientDirection::new(&k);
                d.tprime = arr(s.tprime);
                d
            })
            .collect();
        let cmd = unhex(v.cmd)[0];
        let mut body = body_of("00000000000000000000000000000000", v.msg);
        let target = v.target_hop - 1;
        hops[target].originate(cmd, &mut body);
        for h in (0..target).rev() {
            hops[h].forward(cmd, &mut body);
        }
        assert_eq!(body, body_of(v.tag_out, v.msg_out), "client vector {i}");
        for (h, s) in hops.iter().zip(&v.new_states) {
            assert_state(
                &h.uiv,
                &h.nonce,
                &h.tprime,
                s,
                &format!("client vector {i}"),
            );
        }
    }
}

/// The relay side of the published client vectors: the relays at hops 1..=d, keyed like the
/// client's hops, take the client's cell and exactly hop d recognizes it, with the client's tag.
#[test]
fn relays_recognize_client_vectors() {
    for (i, v) in vectors::CLIENT_ORIGINATE.iter().enumerate() {
        let cmd = unhex(v.cmd)[0];
        let mut client: Vec<ClientDirection<Aes128Dec, Aes128Enc>> = Vec::new();
        let mut relays = Vec::new();
        for s in &v.states {
            let mut k = unhex(s.keys);
            k.extend(unhex(s.nonce));
            let mut c = ClientDirection::new(&k);
            c.tprime = arr(s.tprime);
            client.push(c);
            relays.push(relay_dir(s));
        }
        let target = v.target_hop - 1;
        let mut body = body_of("00000000000000000000000000000000", v.msg);
        let tag = client[target].originate(cmd, &mut body);
        for h in (0..target).rev() {
            client[h].forward(cmd, &mut body);
        }
        for (h, r) in relays.iter_mut().enumerate().take(target + 1) {
            let got = r.forward(cmd, &mut body);
            if h < target {
                assert_eq!(
                    got, None,
                    "client vector {i}: hop {h} must pass the cell on"
                );
            } else {
                assert_eq!(got, Some(tag), "client vector {i}: target hop");
                assert_eq!(
                    &body[CGO_TAG_LEN..],
                    &unhex(v.msg)[..],
                    "client vector {i}: message"
                );
            }
        }
    }
}

/// A client's (forward, backward) directions for one hop.
pub(super) type ClientHop<D, E> = (ClientDirection<D, E>, ClientDirection<D, E>);

/// A random relay/client pair for one hop with AES variant `E` (relay) / `D` (client ET).
fn random_hop<E, D>(rng: &mut StdRng) -> (CgoRelayCrypto<E>, ClientHop<D, E>)
where
    E: CgoAes,
    D: Cipher16 + aes::cipher::BlockDecrypt,
{
    let n = CgoRelayDirection::<E>::key_len();
    let mut f = vec![0u8; n];
    let mut b = vec![0u8; n];
    rng.fill_bytes(&mut f);
    rng.fill_bytes(&mut b);
    (
        CgoRelayCrypto::from_directions(&f, &b).unwrap(),
        (ClientDirection::new(&f), ClientDirection::new(&b)),
    )
}

fn random_cmd(rng: &mut StdRng) -> u8 {
    if rng.gen_bool(0.2) {
        RELAY_EARLY
    } else {
        RELAY
    }
}

/// Client -> hops -> back, random traffic in both directions to random hops; every cell is
/// recognized by exactly its hop, its message arrives intact, and both ends agree on the
/// SENDME tags.
fn round_trip<E, D>(name: &str)
where
    E: CgoAes,
    D: Cipher16 + aes::cipher::BlockDecrypt,
{
    let mut rng = test_rng(name);
    const HOPS: usize = 3;
    let mut relays = Vec::new();
    let mut client = ClientCircuit::<D, E> { hops: Vec::new() };
    for _ in 0..HOPS {
        let (r, c) = random_hop::<E, D>(&mut rng);
        relays.push(r);
        client.hops.push(c);
    }
    for round in 0..300 {
        let cmd = random_cmd(&mut rng);
        let mut msg = [0u8; CELL_BODY_LEN];
        rng.fill_bytes(&mut msg);
        let target = rng.gen_range(0..HOPS);
        if rng.gen_bool(0.5) {
            // Outbound: client -> relays 0..=target.
            let mut body = msg;
            let tag = client.originate(target, cmd, &mut body);
            for (h, r) in relays.iter_mut().enumerate() {
                let mine = r.recognize(cmd, &mut body);
                assert_eq!(mine, h == target, "round {round}: hop {h} recognition");
                if mine {
                    assert_eq!(body[CGO_TAG_LEN..], msg[CGO_TAG_LEN..], "round {round}");
                    assert_eq!(r.sendme_tag(), &tag, "round {round}: SENDME tag");
                    break;
                }
            }
        } else {
            // Inbound: relay `target` originates, relays target-1..0 relay it back.
            let mut body = msg;
            let tag = relays[target].originate(cmd, &mut body);
            for r in relays[..target].iter_mut().rev() {
                r.backward_relay(cmd, &mut body);
            }
            let got = client.recognize(cmd, &mut body);
            assert_eq!(
                got,
                Some((target, tag)),
                "round {round}: client recognition"
            );
            assert_eq!(body[CGO_TAG_LEN..], msg[CGO_TAG_LEN..], "round {round}");
        }
    }
}

#[test]
fn round_trip_aes128() {
    round_trip::<Aes128Enc, Aes128Dec>("round_trip_aes128");
}

#[test]
fn round_trip_aes256() {
    round_trip::<Aes256Enc, Aes256Dec>("round_trip_aes256");
}

/// A flipped bit anywhere in a cell, or a changed command, makes the exit refuse it, and the
/// tag chain keeps every later cell from being recognized (CGO's tagging resistance).
#[test]
fn tampering_is_never_recognized() {
    let mut rng = test_rng("tampering_is_never_recognized");
    for trial in 0..40 {
        let (mut middle, cm) = random_hop::<Aes128Enc, Aes128Dec>(&mut rng);
        let (mut exit, ce) = random_hop::<Aes128Enc, Aes128Dec>(&mut rng);
        let mut client = ClientCircuit { hops: vec![cm, ce] };
        let mut body = [0u8; CELL_BODY_LEN];
        rng.fill_bytes(&mut body);
        client.originate(1, RELAY, &mut body);
        let mut cmd = RELAY;
        if trial % 4 == 0 {
            cmd = RELAY_EARLY;
        } else {
            let bit = rng.gen_range(0..CELL_BODY_LEN * 8);
            body[bit / 8] ^= 1 << (bit % 8);
        }
        assert!(!middle.recognize(cmd, &mut body));
        assert!(
            !exit.recognize(cmd, &mut body),
            "trial {trial}: tampered cell accepted"
        );
        // Honest cells after the tampered one fail too: T' has diverged.
        for _ in 0..3 {
            let mut next = [0u8; CELL_BODY_LEN];
            rng.fill_bytes(&mut next);
            client.originate(1, RELAY, &mut next);
            assert!(!middle.recognize(RELAY, &mut next));
            assert!(
                !exit.recognize(RELAY, &mut next),
                "trial {trial}: chain not broken"
            );
        }
    }
}

/// Random cells that no client made are (all but certainly) not recognized.
#[test]
fn random_cells_are_not_recognized() {
    let mut rng = test_rng("random_cells_are_not_recognized");
    let (mut relay, _) = random_hop::<Aes128Enc, Aes128Dec>(&mut rng);
    for _ in 0..500 {
        let mut body = [0u8; CELL_BODY_LEN];
        rng.fill_bytes(&mut body);
        assert!(!relay.recognize(RELAY, &mut body));
    }
}

/// The batched calls give the same bodies, flags and tags as one-cell calls, for cells of
/// several circuits interleaved in one call and for runs of one circuit.
#[test]
fn batched_calls_match_single_calls() {
    let mut rng = test_rng("batched_calls_match_single_calls");
    const CIRCS: usize = 5;
    const CELLS: usize = 64;
    let mut relays = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..CIRCS {
        let (r, c) = random_hop::<Aes128Enc, Aes128Dec>(&mut rng);
        relays.push(r);
        clients.push(ClientCircuit { hops: vec![c] });
    }
    let fresh_client0 = clients[0].hops[0].clone();
    let circ: Vec<usize> = (0..CELLS).map(|_| rng.gen_range(0..CIRCS)).collect();
    let cmds: Vec<u8> = (0..CELLS).map(|_| random_cmd(&mut rng)).collect();
    // About half the cells are the client's (for the hop), the rest random (pass through).
    // The first is always the client's: it comes before any random cell on its circuit,
    // so at least one cell is recognized whatever the seed (one seed in about 40 left
    // every client cell behind a random one on its circuit).
    let mut cells = vec![[0u8; CELL_BODY_LEN]; CELLS];
    let mut mine = [false; CELLS];
    for i in 0..CELLS {
        rng.fill_bytes(&mut cells[i]);
        if i == 0 || rng.gen_bool(0.5) {
            clients[circ[i]].originate(0, cmds[i], &mut cells[i]);
            mine[i] = true;
        }
    }
    // A random cell on a circuit breaks that circuit's chain for later client cells, so
    // compute the expectation with one-cell calls rather than from `mine`.
    let mut single = relays.clone();
    let mut want = cells.clone();
    let mut want_for_us = vec![false; CELLS];
    for i in 0..CELLS {
        want_for_us[i] = single[circ[i]].recognize(cmds[i], &mut want[i]);
    }
    assert!(
        want_for_us.iter().any(|&f| f),
        "some cell must be recognized"
    );
    assert!(mine.iter().zip(&want_for_us).all(|(&m, &f)| m || !f));
    let mut multi = relays.clone();
    let mut got = cells.clone();
    let mut for_us = vec![false; CELLS];
    let n = forward_multi(&mut multi, &circ, &cmds, &mut got, &mut for_us);
    assert_eq!(got, want);
    assert_eq!(for_us, want_for_us);
    assert_eq!(n, want_for_us.iter().filter(|&&f| f).count());
    for (a, b) in multi.iter().zip(&single) {
        assert_eq!(a.sendme_tag(), b.sendme_tag());
    }

    // One circuit, a run of cells.
    let mut run_relay = relays[0].clone();
    let mut run_single = relays[0].clone();
    let mut run_client = ClientCircuit {
        hops: vec![fresh_client0],
    };
    let mut run = vec![[0u8; CELL_BODY_LEN]; 16];
    let run_cmds: Vec<u8> = (0..16).map(|_| random_cmd(&mut rng)).collect();
    let mut client_tags = Vec::new();
    for (c, &cmd) in run.iter_mut().zip(&run_cmds) {
        rng.fill_bytes(c);
        client_tags.push(run_client.originate(0, cmd, c));
    }
    let mut want_run = run.clone();
    for (c, &cmd) in want_run.iter_mut().zip(&run_cmds) {
        assert!(run_single.recognize(cmd, c));
    }
    let mut flags = [false; 16];
    let mut tags = [[0u8; CGO_TAG_LEN]; 16];
    assert_eq!(
        run_relay.forward_batch(&run_cmds, &mut run, &mut flags, Some(&mut tags)),
        16
    );
    assert_eq!(run, want_run);
    assert_eq!(tags.to_vec(), client_tags);

    // Backward: relayed and originated, multi-circuit and runs.
    let mut b_single = relays.clone();
    let mut b_multi = relays.clone();
    let mut want_b = cells.clone();
    for i in 0..CELLS {
        b_single[circ[i]].backward_relay(cmds[i], &mut want_b[i]);
    }
    let mut got_b = cells.clone();
    backward_relay_multi(&mut b_multi, &circ, &cmds, &mut got_b);
    assert_eq!(got_b, want_b);

    let mut o_single = relays.clone();
    let mut o_multi = relays.clone();
    let mut want_o = cells.clone();
    let mut want_tags = vec![[0u8; CGO_TAG_LEN]; CELLS];
    for i in 0..CELLS {
        want_tags[i] = o_single[circ[i]].originate(cmds[i], &mut want_o[i]);
    }
    let mut got_o = cells.clone();
    let mut got_tags = vec![[0u8; CGO_TAG_LEN]; CELLS];
    originate_multi(&mut o_multi, &circ, &cmds, &mut got_o, Some(&mut got_tags));
    assert_eq!(got_o, want_o);
    assert_eq!(got_tags, want_tags);

    let mut ob = relays[1].clone();
    let mut ob_single = relays[1].clone();
    let mut run_o = cells[..16].to_vec();
    let mut want_run_o = run_o.clone();
    for (c, &cmd) in want_run_o.iter_mut().zip(&run_cmds) {
        ob_single.originate(cmd, c);
    }
    ob.originate_batch(&run_cmds, &mut run_o, None);
    assert_eq!(run_o, want_run_o);
    let mut rb = relays[2].clone();
    let mut rb_single = relays[2].clone();
    let mut run_b = cells[..16].to_vec();
    let mut want_run_b = run_b.clone();
    for (c, &cmd) in want_run_b.iter_mut().zip(&run_cmds) {
        rb_single.backward_relay(cmd, c);
    }
    rb.backward_relay_batch(&run_cmds, &mut run_b);
    assert_eq!(run_b, want_run_b);
}

#[test]
fn key_material_layout_and_lengths() {
    assert_eq!(CGO_AES128_KEY_MATERIAL_LEN, 160);
    assert_eq!(CgoRelayDirection::<Aes128Enc>::key_len(), 80);
    assert_eq!(CgoRelayDirection::<Aes256Enc>::key_len(), 112);
    // From an ntor-v3-style SHAKE stream: forward 80, backward 80, then KH.
    let mut kdf = ShakeKdf::new();
    kdf.absorb(b"cgo key layout test");
    let mut raw = [0u8; CgoKeyMaterial::STREAM_LEN];
    kdf.clone().finalize().read(&mut raw);
    let km = CgoKeyMaterial::from_stream(&mut kdf.finalize());
    assert_eq!(&km.forward[..], &raw[..80]);
    assert_eq!(&km.backward[..], &raw[80..160]);
    assert_eq!(&km.kh[..], &raw[160..]);
    // The relay keyed from it talks to a client keyed from the same bytes.
    let mut relay = CgoRelayCrypto128::new(&km);
    let mut client = ClientCircuit::<Aes128Dec, Aes128Enc> {
        hops: vec![(
            ClientDirection::new(&km.forward),
            ClientDirection::new(&km.backward),
        )],
    };
    let mut body = [7u8; CELL_BODY_LEN];
    let tag = client.originate(0, RELAY, &mut body);
    assert!(relay.recognize(RELAY, &mut body));
    assert_eq!(relay.sendme_tag(), &tag);
    // Wrong lengths are errors, not panics.
    assert_eq!(
        CgoRelayCrypto128::from_directions(&[0u8; 79], &[0u8; 80]).err(),
        Some(CgoKeyError {
            expected: 80,
            got: 79
        })
    );
    assert_eq!(
        CgoRelayCrypto256::from_directions(&[0u8; 112], &[0u8; 80]).err(),
        Some(CgoKeyError {
            expected: 112,
            got: 80
        })
    );
}

// ---- Every implementation path against the `aes` + `polyval` crates (issue #12 item 2) ----

use super::imp::{self, CgoImpls, TweakHash};
use super::polyval_simd::{BlockKey, ClmulImpl, TweakKey};
use crate::crypto::relay::aes_ctr::Aes128Ctr;
use crate::crypto::relay::cpu::{AesImpl, CpuFeatures};

/// The reference path: the `aes` and `polyval` crates, as CGO ran before the SIMD paths.
const REFERENCE: CgoImpls = CgoImpls {
    aes: AesImpl::Portable,
    polyval: None,
};

/// Every AES × POLYVAL combination this CPU runs; the others are printed as SKIPPED.
fn impls_under_test() -> Vec<CgoImpls> {
    let f = CpuFeatures::detect();
    let mut out = Vec::new();
    for aes in AesImpl::ALL {
        for polyval in [None, Some(ClmulImpl::Clmul), Some(ClmulImpl::Vclmul512)] {
            let i = CgoImpls { aes, polyval };
            if f.supports_aes(aes) && polyval.is_none_or(ClmulImpl::supported) {
                out.push(i);
            } else {
                println!("SKIPPED: {i:?} (this CPU lacks its instructions)");
            }
        }
    }
    out
}

/// Runs `f` with keys built on this thread using `imps`.
fn with_impls<T>(imps: CgoImpls, f: impl FnOnce() -> T) -> T {
    assert!(imp::force(Some(imps)), "{imps:?} runs on this CPU");
    let out = f();
    imp::force(None);
    out
}

/// The forced choice really is what keys are built with (else the tests below would compare
/// the default path with itself).
#[test]
fn forced_paths_are_used() {
    let key = [7u8; 32];
    for imps in impls_under_test() {
        with_impls(imps, || {
            let et = Et::<Aes128Enc>::new(&key);
            let prf = Prf::<Aes128Enc>::new(&key);
            assert_eq!(et.polyval_impl(), imps.polyval, "{imps:?}");
            // Every non-portable AES path implies AES-NI, which ET's one-block AES runs on.
            assert_eq!(et.fors_aes(), imps.aes != AesImpl::Portable, "{imps:?}");
            assert!(
                !Et::<Aes256Enc>::new(&[7u8; 48]).fors_aes(),
                "AES-256: generic"
            );
            assert_eq!(prf.polyval_is_clmul(), imps.polyval.is_some(), "{imps:?}");
            assert_eq!(
                prf.fors_aes(),
                Some(imps.aes).filter(|a| *a != AesImpl::Portable)
            );
            // AES-256 has no Fors kernel: always the generic cipher.
            let prf256 = Prf::<Aes256Enc>::new(&[7u8; 48]);
            assert_eq!(prf256.fors_aes(), None);
        });
    }
}

/// Every published vector, on every path this CPU has.
#[test]
fn known_answers_on_every_path() {
    for imps in impls_under_test() {
        println!("known answers with {imps:?}");
        with_impls(imps, || {
            et_known_answers();
            prf_known_answers();
            uiv_known_answers();
            uiv_update_known_answers();
            relay_known_answers();
            relay_originate_known_answers();
            client_originate_known_answers();
            relays_recognize_client_vectors();
        });
    }
}

/// The carry-less POLYVAL paths against the `polyval` crate over random keys and tweaks,
/// including all-ones and zero edge values.
#[test]
fn polyval_paths_match_crate() {
    let mut rng = test_rng("polyval_paths_match_crate");
    let reference = |k: &Block16| with_impls(REFERENCE, || TweakHash::new(k));
    for round in 0..2000 {
        let mut key = [0u8; 16];
        let mut h = [0u8; 16];
        let mut x_r = [0u8; CGO_PAYLOAD_LEN];
        match round {
            0 => (key, h, x_r) = ([0xFF; 16], [0xFF; 16], [0xFF; CGO_PAYLOAD_LEN]),
            1 => key[0] = 1,
            _ => {
                rng.fill_bytes(&mut key);
                rng.fill_bytes(&mut h);
                rng.fill_bytes(&mut x_r);
            }
        }
        let cmd: u8 = rng.gen();
        let want = reference(&key).tweak(&h, cmd, &x_r);
        let one = {
            let mut pv = polyval::Polyval::new(&key.into());
            polyval::universal_hash::UniversalHash::update(&mut pv, &[h.into()]);
            Block16::from(polyval::universal_hash::UniversalHash::finalize(pv))
        };
        for imp in ClmulImpl::ALL.into_iter().filter(|i| i.supported()) {
            let k = TweakKey::new(&key, imp).expect("supported");
            assert_eq!(k.tweak(&h, cmd, &x_r), want, "round {round}: {imp:?} tweak");
            let b = BlockKey::new(&key).expect("supported");
            assert_eq!(b.hash(&h), one, "round {round}: {imp:?} one block");
        }
    }
}

/// The CTR entry point CGO's PRF uses, on every AES path, against the `ctr` crate: random
/// keys, random start counters (some just below a 2^64 or 2^128 wrap), random lengths.
#[test]
fn ctr_at_counter_matches_ctr_crate() {
    use ctr::cipher::{KeyIvInit, StreamCipher};
    let mut rng = test_rng("ctr_at_counter_matches_ctr_crate");
    let imps: Vec<AesImpl> = impls_under_test().iter().map(|i| i.aes).collect();
    for round in 0..600 {
        let mut key = [0u8; 16];
        rng.fill_bytes(&mut key);
        let counter: u128 = match round % 4 {
            0 => u128::from(u64::MAX) - rng.gen_range(0..40),
            1 => u128::MAX - rng.gen_range(0..40),
            _ => rng.gen(),
        };
        let len = rng.gen_range(0..700);
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let mut want = data.clone();
        ctr::Ctr128BE::<aes::Aes128>::new(&key.into(), &counter.to_be_bytes().into())
            .apply_keystream(&mut want);
        for &imp in &imps {
            let c = Aes128Ctr::new(&key, imp);
            let mut got = data.clone();
            c.xor_keystream_at(counter, &mut got);
            assert_eq!(
                got, want,
                "round {round}: {imp:?}, counter {counter:#x}, {len} bytes"
            );
        }
    }
}

/// One relay hop built on each path and one on the reference path take the same random
/// traffic (cells passing through, cells for this hop with their key updates, cells
/// relayed and originated toward the client) and must agree byte for byte.
fn relay_paths_match_reference<E, D>(name: &str)
where
    E: CgoAes,
    D: Cipher16 + aes::cipher::BlockDecrypt,
{
    let mut rng = test_rng(name);
    for imps in impls_under_test() {
        // Hop 0 is the relay under test; the client also keys a hop 1 so that some cells
        // pass through hop 0. The client side runs on the reference path.
        let n = CgoRelayDirection::<E>::key_len();
        let (mut f, mut b) = (vec![0u8; n], vec![0u8; n]);
        rng.fill_bytes(&mut f);
        rng.fill_bytes(&mut b);
        let (mut reference, mut client) = with_impls(REFERENCE, || {
            let hop1 = random_hop::<E, D>(&mut rng).1;
            let hop0 = (ClientDirection::new(&f), ClientDirection::new(&b));
            let relay = CgoRelayCrypto::<E>::from_directions(&f, &b).unwrap();
            (
                relay,
                ClientCircuit::<D, E> {
                    hops: vec![hop0, hop1],
                },
            )
        });
        let mut under_test = with_impls(imps, || {
            CgoRelayCrypto::<E>::from_directions(&f, &b).unwrap()
        });
        let mut recognized = 0;
        for round in 0..150 {
            let cmd = random_cmd(&mut rng);
            let mut a = [0u8; CELL_BODY_LEN];
            rng.fill_bytes(&mut a);
            match rng.gen_range(0..4) {
                0 | 1 => {
                    let target = rng.gen_range(0..2);
                    with_impls(REFERENCE, || client.originate(target, cmd, &mut a));
                    let mut b = a;
                    let want = with_impls(REFERENCE, || reference.recognize(cmd, &mut a));
                    let got = with_impls(imps, || under_test.recognize(cmd, &mut b));
                    assert_eq!(want, target == 0, "round {round}: reference recognition");
                    assert_eq!(got, want, "round {round}: {imps:?} recognition");
                    assert_eq!(b, a, "round {round}: {imps:?} forward body");
                    assert_eq!(under_test.sendme_tag(), reference.sendme_tag());
                    recognized += usize::from(want);
                }
                2 => {
                    let mut b = a;
                    with_impls(REFERENCE, || reference.backward_relay(cmd, &mut a));
                    with_impls(imps, || under_test.backward_relay(cmd, &mut b));
                    assert_eq!(b, a, "round {round}: {imps:?} backward body");
                }
                _ => {
                    let mut b = a;
                    let want = with_impls(REFERENCE, || reference.originate(cmd, &mut a));
                    let got = with_impls(imps, || under_test.originate(cmd, &mut b));
                    assert_eq!(got, want, "round {round}: {imps:?} originate tag");
                    assert_eq!(b, a, "round {round}: {imps:?} originate body");
                }
            }
        }
        assert!(
            recognized > 0,
            "{imps:?}: some cells were for the hop (key updates ran)"
        );
    }
}

#[test]
fn relay_paths_match_reference_aes128() {
    relay_paths_match_reference::<Aes128Enc, Aes128Dec>("relay_paths_match_reference_aes128");
}

#[test]
fn relay_paths_match_reference_aes256() {
    relay_paths_match_reference::<Aes256Enc, Aes256Dec>("relay_paths_match_reference_aes256");
}

/// The interleaved multi-cell kernel ([`interleave`]) gives, through `forward_multi`,
/// `backward_relay_multi` and `originate_multi` and through the one-cell calls (which run it
/// with one lane), exactly what the one-cell path without it gives (keys built on PCLMULQDQ
/// POLYVAL, where the kernel does not run): bodies, recognition flags, SENDME tags, and the
/// states after (checked by a second round of cells), for random circuit counts, group shapes
/// (a circuit's repeated cell ends a group), commands, and cells that are or are not for the
/// hop.
#[test]
fn interleaved_kernel_matches_one_cell_path() {
    let mut rng = test_rng("interleaved_kernel_matches_one_cell_path");
    if !interleave::available() {
        println!("SKIPPED: this CPU lacks AES-NI or VPCLMULQDQ: the kernel does not run here");
        return;
    }
    let before = interleave::KERNEL_CELLS.with(|n| n.get());
    let no_kernel = CgoImpls {
        aes: imp::chosen().aes,
        polyval: Some(ClmulImpl::Clmul),
    };
    for round in 0..40 {
        let circs = rng.gen_range(1..=9);
        let cells_n = rng.gen_range(1..=48);
        let mut multi = Vec::new();
        let mut single = Vec::new();
        let mut clients = Vec::new();
        let n = CgoRelayDirection::<Aes128Enc>::key_len();
        for _ in 0..circs {
            let mut f = vec![0u8; n];
            let mut b = vec![0u8; n];
            rng.fill_bytes(&mut f);
            rng.fill_bytes(&mut b);
            multi.push(CgoRelayCrypto128::from_directions(&f, &b).unwrap());
            single.push(with_impls(no_kernel, || {
                CgoRelayCrypto128::from_directions(&f, &b).unwrap()
            }));
            let hop: ClientHop<Aes128Dec, Aes128Enc> =
                (ClientDirection::new(&f), ClientDirection::new(&b));
            clients.push(ClientCircuit { hops: vec![hop] });
        }
        let mut one_cell = multi.clone();
        for pass in 0..2 {
            let circ: Vec<usize> = (0..cells_n).map(|_| rng.gen_range(0..circs)).collect();
            let cmds: Vec<u8> = (0..cells_n).map(|_| random_cmd(&mut rng)).collect();
            let mut cells = vec![[0u8; CELL_BODY_LEN]; cells_n];
            for i in 0..cells_n {
                rng.fill_bytes(&mut cells[i]);
                if pass == 0 && rng.gen_bool(0.5) {
                    clients[circ[i]].originate(0, cmds[i], &mut cells[i]);
                }
            }
            let ctx = format!("round {round} pass {pass} circ {circ:?}");
            // Forward.
            let mut want = cells.clone();
            let want_for_us: Vec<bool> = (0..cells_n)
                .map(|i| single[circ[i]].recognize(cmds[i], &mut want[i]))
                .collect();
            let mut got = cells.clone();
            let mut for_us = vec![false; cells_n];
            let n = forward_multi(&mut multi, &circ, &cmds, &mut got, &mut for_us);
            assert_eq!(got, want, "forward bodies, {ctx}");
            assert_eq!(for_us, want_for_us, "forward flags, {ctx}");
            assert_eq!(n, want_for_us.iter().filter(|&&f| f).count(), "{ctx}");
            let mut got = cells.clone();
            for i in 0..cells_n {
                let f = one_cell[circ[i]].recognize(cmds[i], &mut got[i]);
                assert_eq!(f, want_for_us[i], "one-cell forward flag {i}, {ctx}");
            }
            assert_eq!(got, want, "one-cell forward bodies, {ctx}");
            // Backward, relayed.
            let mut want = cells.clone();
            for i in 0..cells_n {
                single[circ[i]].backward_relay(cmds[i], &mut want[i]);
            }
            let mut got = cells.clone();
            backward_relay_multi(&mut multi, &circ, &cmds, &mut got);
            assert_eq!(got, want, "backward bodies, {ctx}");
            let mut got = cells.clone();
            for i in 0..cells_n {
                one_cell[circ[i]].backward_relay(cmds[i], &mut got[i]);
            }
            assert_eq!(got, want, "one-cell backward bodies, {ctx}");
            // Originated.
            let mut want = cells.clone();
            let want_tags: Vec<Block16> = (0..cells_n)
                .map(|i| single[circ[i]].originate(cmds[i], &mut want[i]))
                .collect();
            let mut got = cells.clone();
            let mut tags = vec![[0u8; CGO_TAG_LEN]; cells_n];
            originate_multi(&mut multi, &circ, &cmds, &mut got, Some(&mut tags));
            assert_eq!(got, want, "originated bodies, {ctx}");
            assert_eq!(tags, want_tags, "originated tags, {ctx}");
            let mut got = cells.clone();
            for i in 0..cells_n {
                let t = one_cell[circ[i]].originate(cmds[i], &mut got[i]);
                assert_eq!(t, want_tags[i], "one-cell originated tag {i}, {ctx}");
            }
            assert_eq!(got, want, "one-cell originated bodies, {ctx}");
            for ((a, b), c) in multi.iter().zip(&single).zip(&one_cell) {
                assert_eq!(a.sendme_tag(), b.sendme_tag(), "{ctx}");
                assert_eq!(c.sendme_tag(), b.sendme_tag(), "{ctx}");
            }
        }
    }
    let ran = interleave::KERNEL_CELLS.with(|n| n.get()) - before;
    assert!(
        ran > 0,
        "the kernel never ran: the test compared the one-cell path with itself"
    );
    println!("{ran} cells through the interleaved kernel");
}

/// The `*_group` calls (states lent one per cell, as the relay's read path lends them from its
/// circuit table) give the bytes, flags and tags of the one-cell calls without the kernel, on
/// random groups of distinct circuits (one to seven: more than one kernel call); the
/// interleaved count they report is the cells of kernel groups of two or more.
#[test]
fn group_calls_match_one_cell_path() {
    let mut rng = test_rng("group_calls_match_one_cell_path");
    let kernel = interleave::available();
    if !kernel {
        println!("SKIPPED (kernel part): this CPU lacks AES-NI or VPCLMULQDQ");
    }
    let no_kernel = CgoImpls {
        aes: imp::chosen().aes,
        polyval: Some(ClmulImpl::Clmul),
    };
    let mut interleaved = 0;
    for round in 0..40 {
        let circs = rng.gen_range(1..=7);
        let n = CgoRelayDirection::<Aes128Enc>::key_len();
        let mut grouped = Vec::new();
        let mut single = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..circs {
            let mut f = vec![0u8; n];
            let mut b = vec![0u8; n];
            rng.fill_bytes(&mut f);
            rng.fill_bytes(&mut b);
            grouped.push(CgoRelayCrypto128::from_directions(&f, &b).unwrap());
            single.push(with_impls(no_kernel, || {
                CgoRelayCrypto128::from_directions(&f, &b).unwrap()
            }));
            let hop: ClientHop<Aes128Dec, Aes128Enc> =
                (ClientDirection::new(&f), ClientDirection::new(&b));
            clients.push(ClientCircuit { hops: vec![hop] });
        }
        for pass in 0..3 {
            // Each circuit at most once per call (the states are `&mut`).
            let k = rng.gen_range(1..=circs);
            let cmds: Vec<u8> = (0..k).map(|_| random_cmd(&mut rng)).collect();
            let mut cells = vec![[0u8; CELL_BODY_LEN]; k];
            for (i, c) in cells.iter_mut().enumerate() {
                rng.fill_bytes(c);
                if rng.gen_bool(0.5) {
                    clients[i].originate(0, cmds[i], c);
                }
            }
            let ctx = format!("round {round} pass {pass}: {k} of {circs} circuits");
            let expect_interleaved = if kernel && k > 1 {
                k - k % CGO_GROUP + if k % CGO_GROUP > 1 { k % CGO_GROUP } else { 0 }
            } else {
                0
            };
            // Forward.
            let mut want = cells.clone();
            let want_for_us: Vec<bool> = (0..k)
                .map(|i| single[i].recognize(cmds[i], &mut want[i]))
                .collect();
            let mut got = cells.clone();
            let mut for_us = vec![false; k];
            let d = {
                let mut hops: Vec<&mut CgoRelayCrypto128> = grouped.iter_mut().take(k).collect();
                let mut refs: Vec<&mut CellBody> = got.iter_mut().collect();
                forward_group(&mut hops, &cmds, &mut refs, &mut for_us)
            };
            assert_eq!(got, want, "forward bodies, {ctx}");
            assert_eq!(for_us, want_for_us, "forward flags, {ctx}");
            assert_eq!(
                d.for_us,
                want_for_us.iter().filter(|&&f| f).count(),
                "{ctx}"
            );
            assert_eq!(d.interleaved, expect_interleaved, "{ctx}");
            interleaved += d.interleaved;
            // Backward, relayed.
            let mut want = cells.clone();
            for i in 0..k {
                single[i].backward_relay(cmds[i], &mut want[i]);
            }
            let mut got = cells.clone();
            {
                let mut hops: Vec<&mut CgoRelayCrypto128> = grouped.iter_mut().take(k).collect();
                let mut refs: Vec<&mut CellBody> = got.iter_mut().collect();
                let d = backward_relay_group(&mut hops, &cmds, &mut refs);
                assert_eq!(d.interleaved, expect_interleaved, "{ctx}");
            }
            assert_eq!(got, want, "backward bodies, {ctx}");
            // Originated.
            let mut want = cells.clone();
            let want_tags: Vec<Block16> = (0..k)
                .map(|i| single[i].originate(cmds[i], &mut want[i]))
                .collect();
            let mut got = cells.clone();
            let mut tags = vec![[0u8; CGO_TAG_LEN]; k];
            {
                let mut hops: Vec<&mut CgoRelayCrypto128> = grouped.iter_mut().take(k).collect();
                let mut refs: Vec<&mut CellBody> = got.iter_mut().collect();
                originate_group(&mut hops, &cmds, &mut refs, Some(&mut tags));
            }
            assert_eq!(got, want, "originated bodies, {ctx}");
            assert_eq!(tags, want_tags, "originated tags, {ctx}");
            for (a, b) in grouped.iter().zip(&single) {
                assert_eq!(a.sendme_tag(), b.sendme_tag(), "{ctx}");
            }
        }
    }
    if kernel {
        assert!(interleaved > 0, "no group went through the kernel");
    }
    println!("{interleaved} forward cells in kernel groups of two or more");
}
