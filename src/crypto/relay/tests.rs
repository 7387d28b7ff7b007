//! Cross-path tests for tor1 relay crypto: a C-tor-generated vector, an independent reference
//! built from the `aes`/`ctr`/`sha1` crates, and round trips through three hops with every
//! implementation this CPU offers.

use super::cpu::{AesImpl, CpuFeatures, Sha1Impl};
use super::tor1::Tor1Direction;
use super::*;
use crate::crypto::keymat::Tor1KeyMaterial;
use ::sha1::Digest;
use ctr::cipher::{KeyIvInit, StreamCipher};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

fn random_keys(rng: &mut StdRng) -> Tor1KeyMaterial {
    let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
    rng.fill_bytes(&mut k);
    Tor1KeyMaterial::from_kdf_output(&k)
}

/// A plausible relay cell body: recognized = 0, random payload.
fn random_body(rng: &mut StdRng) -> CellBody {
    let mut b = [0u8; CELL_BODY_LEN];
    rng.fill_bytes(&mut b);
    b[1] = 0;
    b[2] = 0;
    b
}

/// One direction of tor1 written the obvious way with the RustCrypto crates, as the reference.
struct RefDirection {
    ctr: ctr::Ctr128BE<aes::Aes128>,
    sha: ::sha1::Sha1,
}

impl RefDirection {
    fn new(key: &[u8; 16], seed: &[u8; 20]) -> Self {
        let mut sha = ::sha1::Sha1::new();
        sha.update(seed);
        RefDirection {
            ctr: ctr::Ctr128BE::new(key.into(), &[0u8; 16].into()),
            sha,
        }
    }
    fn originate(&mut self, body: &mut CellBody) -> [u8; 20] {
        body[5..9].fill(0);
        self.sha.update(&body[..]);
        let d: [u8; 20] = self.sha.clone().finalize().into();
        body[5..9].copy_from_slice(&d[..4]);
        self.ctr.apply_keystream(body);
        d
    }
}

fn all_engines() -> Vec<(AesImpl, Sha1Impl)> {
    let f = CpuFeatures::detect();
    let mut v = Vec::new();
    for a in f.aes_impls() {
        for s in f.sha1_impls() {
            v.push((a, s));
        }
    }
    v
}

/// C tor's relay-crypto test setup: three hops keyed by fixed 72-byte strings (Df|Db|Kf|Kb),
/// 51 DATA cells whose payload comes from SHAKE-256 of a seed, originated by the client to the
/// third hop. Expected ciphertexts were produced by C tor.
#[test]
fn c_tor_client_originate_vector() {
    use sha3::digest::{ExtendableOutput, Update, XofReader};
    const K: [&[u8; 72]; 3] = [
        b"    'My public key is in this signed x509 object', said Tom assertively.",
        b"'Let's chart the pedal phlanges in the tomb', said Tom cryptographically",
        b"     'Segmentation fault bugs don't _just happen_', said Tom seethingly.",
    ];
    const SEED: &[u8] = b"'You mean to tell me that there's a version of Sha-3 with no limit on the output length?', said Tom shakily.";
    let expected: Vec<(usize, Vec<u8>)> = include_str!("testdata/tor1_client_cells.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (n, hex) = l.split_once(' ').expect("vector line");
            (
                n.parse().expect("cell number"),
                crate::util::hex::decode(hex).expect("hex"),
            )
        })
        .collect();
    assert_eq!(expected.len(), 8);
    let keys: Vec<Tor1KeyMaterial> = K
        .iter()
        .map(|k| {
            let mut m = [0u8; Tor1KeyMaterial::KDF_LEN];
            m[..72].copy_from_slice(&k[..]);
            Tor1KeyMaterial::from_kdf_output(&m)
        })
        .collect();
    for (aes, sha) in all_engines() {
        let mut client = Tor1ClientCircuit::new();
        let mut relays: Vec<Tor1RelayCrypto> = Vec::new();
        for k in &keys {
            client.push_hop(Tor1ClientLayer::with_impls(k, aes, sha));
            relays.push(Tor1RelayCrypto::with_impls(k, aes, sha));
        }
        let mut xof = sha3::Shake256::default();
        xof.update(SEED);
        let mut stream = xof.finalize_xof();
        let mut next = expected.iter().peekable();
        for cellno in 0..51 {
            let mut body = [0u8; CELL_BODY_LEN];
            body[0] = 2; // RELAY_DATA
            body[4] = 1; // stream 1
            body[9] = 1; // length 498
            body[10] = 242;
            stream.read(&mut body[11..]);
            let plain = body;
            let tag = client.originate(2, &mut body).expect("hop 2 exists");
            if let Some((_, want)) = next.next_if(|(n, _)| *n == cellno) {
                assert_eq!(&body[..], &want[..], "{aes:?}/{sha:?} cell {cellno}");
            }
            // The relays peel it: only the third hop recognizes it, and gets the plaintext.
            assert!(!relays[0].recognize(&mut body));
            assert!(!relays[1].recognize(&mut body));
            assert!(relays[2].recognize(&mut body));
            assert_eq!(body, plain);
            assert_eq!(relays[2].sendme_tag(), &tag);
        }
        assert!(next.next().is_none());
    }
}

/// Originate (single, batched, multi-circuit with every SHA-1 strategy, indexed with repeated
/// circuits) equals the straightforward reference, cell for cell, tag for tag.
#[test]
fn originate_paths_match_reference() {
    let mut rng = StdRng::seed_from_u64(31);
    let features = CpuFeatures::detect();
    for (aes, sha) in all_engines() {
        for multi in features.sha1_multi_impls() {
            let ncirc = rng.gen_range(1..40);
            let keys: Vec<_> = (0..ncirc).map(|_| random_keys(&mut rng)).collect();
            let mut refs: Vec<_> = keys
                .iter()
                .map(|k| RefDirection::new(&k.kb, &k.db))
                .collect();
            let mut single: Vec<_> = keys
                .iter()
                .map(|k| Tor1RelayCrypto::with_impls(k, aes, sha))
                .collect();
            let mut batched = single.clone();
            let mut multi_s = single.clone();
            let mut indexed = single.clone();
            for _round in 0..4 {
                // single + batched: a run of 1..4 cells per circuit.
                for c in 0..ncirc {
                    let run = rng.gen_range(1..4);
                    let mut cells: Vec<CellBody> =
                        (0..run).map(|_| random_body(&mut rng)).collect();
                    let mut want = cells.clone();
                    let want_tags: Vec<_> = want.iter_mut().map(|b| refs[c].originate(b)).collect();
                    let mut one = cells.clone();
                    for (b, t) in one.iter_mut().zip(&want_tags) {
                        assert_eq!(&single[c].originate(b), t);
                    }
                    let mut tags = vec![[0u8; 20]; run];
                    batched[c].originate_batch_tagged(&mut cells, &mut tags);
                    assert_eq!(one, want, "{aes:?}/{sha:?} single");
                    assert_eq!(cells, want, "{aes:?}/{sha:?} batched");
                    assert_eq!(tags, want_tags);
                    assert_eq!(batched[c].sendme_tag(), want_tags.last().unwrap());
                }
            }
            // Multi-circuit paths, compared with fresh reference streams.
            let mut refs: Vec<_> = keys
                .iter()
                .map(|k| RefDirection::new(&k.kb, &k.db))
                .collect();
            for _round in 0..5 {
                let mut cells: Vec<CellBody> = (0..ncirc).map(|_| random_body(&mut rng)).collect();
                let mut want = cells.clone();
                let want_tags: Vec<_> = want
                    .iter_mut()
                    .zip(refs.iter_mut())
                    .map(|(b, r)| r.originate(b))
                    .collect();
                let mut tags = vec![[0u8; 20]; ncirc];
                {
                    let mut jobs: Vec<CircuitCell<'_>> = multi_s
                        .iter_mut()
                        .zip(cells.iter_mut())
                        .map(|(crypto, cell)| CircuitCell { crypto, cell })
                        .collect();
                    let min = rng.gen_range(1..4);
                    originate_multi_with(&mut jobs, Some(&mut tags), multi, min);
                }
                assert_eq!(cells, want, "{aes:?}/{sha:?}/{multi:?} multi");
                assert_eq!(tags, want_tags);
                for (c, t) in multi_s.iter().zip(&want_tags) {
                    assert_eq!(c.sendme_tag(), t);
                }
            }
            // Indexed form with repeats: circuit indices in random order, some twice.
            let mut refs: Vec<_> = keys
                .iter()
                .map(|k| RefDirection::new(&k.kb, &k.db))
                .collect();
            let n = ncirc * 2;
            let circuits: Vec<usize> = (0..n).map(|_| rng.gen_range(0..ncirc)).collect();
            let mut cells: Vec<CellBody> = (0..n).map(|_| random_body(&mut rng)).collect();
            let mut want = cells.clone();
            let want_tags: Vec<_> = want
                .iter_mut()
                .zip(&circuits)
                .map(|(b, &c)| refs[c].originate(b))
                .collect();
            let mut tags = vec![[0u8; 20]; n];
            originate_multi_indexed(&mut indexed, &mut cells, &circuits, Some(&mut tags));
            assert_eq!(cells, want, "{aes:?}/{sha:?} indexed");
            assert_eq!(tags, want_tags);
        }
    }
}

/// Client → middle → middle → exit and back, with batched middles, multi-circuit exits, every
/// SHA-1 strategy, and SENDME tags agreeing on both ends.
#[test]
fn three_hop_round_trips() {
    let mut rng = StdRng::seed_from_u64(41);
    let features = CpuFeatures::detect();
    for (aes, sha) in all_engines() {
        for multi in features.sha1_multi_impls() {
            let ncirc = 20;
            let mut clients = Vec::new();
            let mut hops: [Vec<Tor1RelayCrypto>; 3] = [Vec::new(), Vec::new(), Vec::new()];
            for _ in 0..ncirc {
                let mut c = Tor1ClientCircuit::new();
                for h in hops.iter_mut() {
                    let k = random_keys(&mut rng);
                    c.push_hop(Tor1ClientLayer::with_impls(&k, aes, sha));
                    h.push(Tor1RelayCrypto::with_impls(&k, aes, sha));
                }
                clients.push(c);
            }
            for _round in 0..3 {
                // Forward: each client sends a run of cells to its exit.
                let run = 3;
                let mut plain = Vec::new();
                let mut wire: Vec<Vec<CellBody>> = Vec::new();
                let mut client_tags = Vec::new();
                for c in clients.iter_mut() {
                    let cells: Vec<CellBody> = (0..run).map(|_| random_body(&mut rng)).collect();
                    let mut w = cells.clone();
                    let mut tags = Vec::new();
                    for b in w.iter_mut() {
                        tags.push(c.originate(2, b).unwrap());
                    }
                    plain.push(cells);
                    wire.push(w);
                    client_tags.push(tags);
                }
                for (i, w) in wire.iter_mut().enumerate() {
                    for hop in &mut hops[..2] {
                        let mut for_us = vec![true; run];
                        assert_eq!(hop[i].forward_batch(w, &mut for_us), 0);
                    }
                }
                // Exit: cell k of every circuit in one multi-circuit call.
                for k in 0..run {
                    let mut for_us = vec![false; ncirc];
                    let mut jobs: Vec<CircuitCell<'_>> = hops[2]
                        .iter_mut()
                        .zip(wire.iter_mut())
                        .map(|(crypto, w)| CircuitCell {
                            crypto,
                            cell: &mut w[k],
                        })
                        .collect();
                    assert_eq!(forward_multi_with(&mut jobs, &mut for_us, multi, 2), ncirc);
                    assert!(for_us.iter().all(|x| *x));
                    for (i, w) in wire.iter().enumerate() {
                        let mut p = plain[i][k];
                        p[5..9].fill(0);
                        assert_eq!(w[k], p, "{aes:?}/{sha:?}/{multi:?}");
                        assert_eq!(hops[2][i].sendme_tag(), &client_tags[i][k]);
                    }
                }
                // Backward: the exit originates one cell per circuit, middles add layers in
                // batches, the client finds hop 2 sent it.
                let mut cells: Vec<CellBody> = (0..ncirc).map(|_| random_body(&mut rng)).collect();
                let sent = cells.clone();
                {
                    let mut jobs: Vec<CircuitCell<'_>> = hops[2]
                        .iter_mut()
                        .zip(cells.iter_mut())
                        .map(|(crypto, cell)| CircuitCell { crypto, cell })
                        .collect();
                    originate_multi_with(&mut jobs, None, multi, 2);
                }
                for (i, cell) in cells.iter_mut().enumerate() {
                    for hop in [1, 0] {
                        hops[hop][i].backward_relay_batch(std::slice::from_mut(cell));
                    }
                    assert_eq!(clients[i].recognize(cell), Some(2));
                    let mut p = sent[i];
                    p[5..9].fill(0);
                    assert_eq!(*cell, p);
                    assert_eq!(
                        clients[i].hop(2).unwrap().sendme_tag(),
                        hops[2][i].sendme_tag()
                    );
                }
                // A middle originates too (e.g. a TRUNCATED): the client attributes it to hop 1.
                for i in 0..ncirc {
                    let mut cell = random_body(&mut rng);
                    let p = cell;
                    hops[1][i].originate(&mut cell);
                    hops[0][i].backward_relay(&mut cell);
                    assert_eq!(clients[i].recognize(&mut cell), Some(1));
                    assert_eq!(cell[9..], p[9..]);
                }
            }
        }
    }
}

/// A forged cell with recognized = 0 but a wrong digest is not for us, comes out exactly as
/// decrypted (digest bytes restored), and leaves the running digest as it was, so the next
/// genuine cell still matches: single, batched and multi-circuit paths.
#[test]
fn digest_mismatch_restores_state() {
    let mut rng = StdRng::seed_from_u64(51);
    let features = CpuFeatures::detect();
    for multi in features.sha1_multi_impls() {
        let ncirc = 17;
        let keys: Vec<_> = (0..ncirc).map(|_| random_keys(&mut rng)).collect();
        let e = super::cpu::Tor1Engine::get();
        let mut senders: Vec<Tor1Direction> = keys
            .iter()
            .map(|k| Tor1Direction::new(&k.kf, &k.df, e.aes, e.sha1))
            .collect();
        let mut relays: Vec<Tor1RelayCrypto> = keys.iter().map(Tor1RelayCrypto::new).collect();
        for round in 0..6 {
            let forge: Vec<bool> = (0..ncirc).map(|_| rng.gen_bool(0.4)).collect();
            let mut plain = Vec::new();
            let mut cells = Vec::new();
            for (c, s) in senders.iter_mut().enumerate() {
                let mut b = random_body(&mut rng);
                if forge[c] {
                    // Encrypted but never digested: the digest field is garbage.
                    plain.push(b);
                } else {
                    s.set_digest(&mut b);
                    let mut p = b;
                    p[5..9].fill(0);
                    plain.push(p);
                }
                s.crypt(&mut b);
                cells.push(b);
            }
            let mut for_us = vec![false; ncirc];
            match round % 3 {
                0 => {
                    for (c, cell) in cells.iter_mut().enumerate() {
                        for_us[c] = relays[c].recognize(cell);
                    }
                }
                1 => {
                    for (c, cell) in cells.iter_mut().enumerate() {
                        relays[c].forward_batch(std::slice::from_mut(cell), &mut for_us[c..c + 1]);
                    }
                }
                _ => {
                    let mut jobs: Vec<CircuitCell<'_>> = relays
                        .iter_mut()
                        .zip(cells.iter_mut())
                        .map(|(crypto, cell)| CircuitCell { crypto, cell })
                        .collect();
                    forward_multi_with(&mut jobs, &mut for_us, multi, 2);
                }
            }
            for c in 0..ncirc {
                assert_eq!(for_us[c], !forge[c], "{multi:?} round {round} circuit {c}");
                assert_eq!(cells[c], plain[c]);
            }
        }
    }
}

/// Mixed runs on the middle path: cells for this hop interleaved with cells passing through,
/// in one `forward_batch`.
#[test]
fn forward_batch_mixed_run() {
    let mut rng = StdRng::seed_from_u64(61);
    let k0 = random_keys(&mut rng);
    let k1 = random_keys(&mut rng);
    let mut client = Tor1ClientCircuit::new();
    client.push_hop(Tor1ClientLayer::new(&k0));
    client.push_hop(Tor1ClientLayer::new(&k1));
    let mut guard = Tor1RelayCrypto::new(&k0);
    let mut exit = Tor1RelayCrypto::new(&k1);
    let targets: Vec<usize> = (0..50).map(|_| rng.gen_range(0..2)).collect();
    let mut cells: Vec<CellBody> = targets.iter().map(|_| random_body(&mut rng)).collect();
    for (b, &t) in cells.iter_mut().zip(&targets) {
        client.originate(t, b).unwrap();
    }
    let mut for_us = vec![false; cells.len()];
    let hits = guard.forward_batch(&mut cells, &mut for_us);
    assert_eq!(hits, targets.iter().filter(|t| **t == 0).count());
    for ((b, &t), &hit) in cells.iter_mut().zip(&targets).zip(&for_us) {
        assert_eq!(hit, t == 0);
        if t == 1 {
            assert!(exit.recognize(b));
        }
    }
    assert_eq!(
        client.originate(2, &mut cells[0]),
        Err(Tor1ClientError::NoSuchHop { hop: 2, hops: 2 })
    );
}

/// Per-cell SENDME tags from the batched forward paths are the tags the client computed for
/// exactly those cells (so a SENDME can answer any cell of a batch), for a run of one
/// circuit and for cells of many circuits in one multi-circuit call.
#[test]
fn forward_tags_per_cell_match_the_client() {
    let mut rng = StdRng::seed_from_u64(62);
    const N: usize = 6;
    let keys: Vec<_> = (0..N).map(|_| random_keys(&mut rng)).collect();
    let mut clients: Vec<Tor1ClientCircuit> = keys
        .iter()
        .map(|k| {
            let mut c = Tor1ClientCircuit::new();
            c.push_hop(Tor1ClientLayer::new(k));
            c
        })
        .collect();
    // One circuit, a run of 20 cells, every third for a second hop (not for us).
    clients[0].push_hop(Tor1ClientLayer::new(&random_keys(&mut rng)));
    let mut relay = Tor1RelayCrypto::new(&keys[0]);
    let mut cells = vec![[0u8; CELL_BODY_LEN]; 20];
    let mut want = vec![None; 20];
    for (i, c) in cells.iter_mut().enumerate() {
        *c = random_body(&mut rng);
        if i % 3 == 2 {
            // For the next hop: it passes through this one.
            clients[0].originate(1, c).unwrap();
        } else {
            want[i] = Some(clients[0].originate(0, c).unwrap());
        }
    }
    let mut hits = vec![false; 20];
    let mut tags = vec![[0u8; 20]; 20];
    relay.forward_batch_tagged(&mut cells, &mut hits, &mut tags);
    for i in 0..20 {
        assert_eq!(hits[i], want[i].is_some(), "cell {i}");
        if let Some(t) = want[i] {
            assert_eq!(tags[i], t, "cell {i}");
        }
    }
    // Many circuits, several cells each, round-robin: one multi-circuit call.
    let mut states: Vec<Tor1RelayCrypto> = keys[1..].iter().map(Tor1RelayCrypto::new).collect();
    let mut cells = vec![];
    let mut circuits = vec![];
    let mut want = vec![];
    for _round in 0..3 {
        for (j, cl) in clients[1..].iter_mut().enumerate() {
            let mut c = random_body(&mut rng);
            want.push(cl.originate(0, &mut c).unwrap());
            cells.push(c);
            circuits.push(j);
        }
    }
    // All rounds in one call: a circuit occurs three times, so its cells go in separate
    // groups, in order.
    struct Jobs<'a> {
        states: &'a mut [Tor1RelayCrypto],
        cells: &'a mut [CellBody],
        circuits: &'a [usize],
    }
    impl MultiJobs for Jobs<'_> {
        fn count(&self) -> usize {
            self.cells.len()
        }
        fn circuit(&self, i: usize) -> usize {
            self.circuits[i]
        }
        fn get(&mut self, i: usize) -> (&mut Tor1RelayCrypto, &mut CellBody) {
            (&mut self.states[self.circuits[i]], &mut self.cells[i])
        }
    }
    let total = cells.len();
    let mut hits = vec![false; total];
    let mut tags = vec![[0u8; 20]; total];
    let n = forward_multi_jobs(
        &mut Jobs {
            states: &mut states,
            cells: &mut cells,
            circuits: &circuits,
        },
        &mut hits,
        &mut tags,
    );
    assert_eq!(n, total);
    assert_eq!(tags, want);
}
