//! The introduction and rendezvous point on a relay with two shards, in the circuit core
//! with no sockets: two cores (shard 0 and shard 1) whose `Action::Hs` messages the test
//! carries between them in order, as the node's cross-shard queues do. The service's and
//! the client's circuits sit on different shards, and each key's or cookie's home table on
//! either (rend-spec-v3; C tor `hs_intropoint.c`, `rendmid.c`, `hs_circuitmap.c`, the
//! splice in `relay.c`).
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod circuit_common;

use std::collections::VecDeque;

use circuit_common::*;
use ed25519_dalek::{Signer, SigningKey};
use fors::cell::chan::{Create2, Created2, DestroyReason};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::proto::circuit::hs_cross::HsMsg;
use fors::proto::circuit::{Action, ChanInfo, RelayIdentity, ShardIdx};
use fors::proto::hs::cells::{
    encode_establish_intro, AckStatus, Introduce1, IntroduceAck, Rendezvous1,
};
use fors::proto::hs::home_shard;
use fors::proto::hs::verify::{hs_mac, ESTABLISH_INTRO_SIG_PREFIX};
use fors_testkit::circuit::PendingHandshake;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn seeded(test: &str) -> StdRng {
    let seed: u64 = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rngs::OsRng.gen());
    println!("{test}: seed {seed}");
    StdRng::seed_from_u64(seed)
}

fn peer(tag: u8) -> RelayIdentity {
    RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([tag; 20]),
        ed: fors::crypto::ids::Ed25519Identity([tag; 32]),
    }
}

/// Two shards of one relay and the messages in flight between them, in order.
struct Pair {
    r: Vec<Relay>,
    /// (to, msg) in push order (one FIFO per direction would keep the same order here: a
    /// test delivers everything before the next cell).
    flight: VecDeque<(usize, HsMsg)>,
    /// Cells each shard emitted, not yet looked at.
    out: [Vec<Action>; 2],
}

impl Pair {
    fn new() -> Pair {
        let r = (0..2)
            .map(|s| {
                let cfg = fors::proto::circuit::CircuitConfig {
                    shard: ShardIdx(s),
                    ..test_config()
                };
                let mut r = Relay::new(1, cfg, "reject *:*", TestNet::default());
                r.core.set_shard_count(2);
                r
            })
            .collect();
        Pair {
            r,
            flight: VecDeque::new(),
            out: [Vec::new(), Vec::new()],
        }
    }

    /// Sorts shard `s`'s actions: messages go in flight, the rest to `out[s]`.
    fn take(&mut self, s: usize, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Hs { to, msg } => {
                    assert_ne!(usize::from(to.0), s, "a shard never messages itself");
                    self.flight.push_back((usize::from(to.0), msg));
                }
                a => self.out[s].push(a),
            }
        }
    }

    /// Delivers the first message in flight.
    fn deliver_one(&mut self) -> bool {
        let Some((to, msg)) = self.flight.pop_front() else {
            return false;
        };
        let (_, acts) = self.r[to].io(|c, io| c.handle_hs_msg(msg, io));
        self.take(to, acts);
        true
    }

    /// Delivers until nothing is in flight (bounded).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("messages never settled");
    }

    /// Everything each shard emitted since the last call.
    fn drain(&mut self) -> [Vec<Action>; 2] {
        [
            std::mem::take(&mut self.out[0]),
            std::mem::take(&mut self.out[1]),
        ]
    }

    /// A cell from `cl`'s channel into shard `s`, messages left in flight.
    fn cell_held(&mut self, s: usize, cl: &Client, cmd: ChanCmd, body: [u8; CELL_BODY_LEN]) {
        let acts = self.r[s].cell(&cl.chan, cl.circ_id, cmd, body);
        self.take(s, acts);
    }

    fn cell(&mut self, s: usize, cl: &Client, cmd: ChanCmd, body: [u8; CELL_BODY_LEN]) {
        self.cell_held(s, cl, cmd, body);
        self.settle();
    }
}

/// Builds a one-hop circuit to shard `s` over channel `chan`; returns the client and KH.
fn build(p: &mut Pair, s: usize, chan: ChanInfo, id: u32) -> (Client, [u8; 20]) {
    let r = &mut p.r[s];
    let mut cl = Client::new(chan, 0x8000_0000 | id);
    let onion = *r.keys.current().public();
    let hs = Handshake::Ntor {
        rsa: r.id.rsa,
        onion,
    };
    let (st, skin) = PendingHandshake::start(&mut cl.rng, &hs).unwrap();
    let mut body = [0u8; CELL_BODY_LEN];
    Create2 {
        htype: st.htype().unwrap(),
        hdata: &skin,
    }
    .encode(&mut body)
    .unwrap();
    assert!(r
        .cell(&cl.chan, cl.circ_id, ChanCmd::CREATE2, body)
        .is_empty());
    let acts = r.onions();
    let (_, got_id, cmd, reply) = one_cell(&acts);
    assert_eq!((got_id, cmd), (cl.circ_id, ChanCmd::CREATED2));
    let (keys, _) = st.finish(Created2::parse(&reply).unwrap().hdata).unwrap();
    cl.circ.layers.push(&keys);
    (cl, keys.kh)
}

/// A relay message of `cl` to hop `hop`, as a cell body.
fn relay_cell(cl: &mut Client, hop: usize, cmd: RelayCmd, data: &[u8]) -> [u8; CELL_BODY_LEN] {
    cl.circ
        .relay_cell_with(&mut cl.rng, hop, cmd, 0, |o| {
            o[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .unwrap()
        .0
}

fn send(p: &mut Pair, s: usize, cl: &mut Client, cmd: RelayCmd, data: &[u8]) {
    let body = relay_cell(cl, 0, cmd, data);
    p.cell(s, cl, ChanCmd::RELAY, body);
}

/// The relay cells in `acts` for `cl`, decrypted: (hop, cmd, data).
fn got(cl: &mut Client, acts: &[Action]) -> Vec<(usize, RelayCmd, Vec<u8>)> {
    cl.open_all(acts)
        .into_iter()
        .map(|(hop, cmd, _, d)| (hop, cmd, d))
        .collect()
}

fn destroys(acts: &[Action]) -> Vec<(u64, CircId, DestroyReason)> {
    cells(acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|(ch, id, _, b)| (ch.0, id, destroy_reason(&b)))
        .collect()
}

fn establish_intro(sk: &SigningKey, kh: &[u8; 20]) -> Vec<u8> {
    let mut out = [0u8; 498];
    let n = encode_establish_intro(
        sk.verifying_key().as_bytes(),
        &[],
        |m| hs_mac(kh, m),
        |m| {
            let signed = [ESTABLISH_INTRO_SIG_PREFIX, m].concat();
            sk.sign(&signed).to_bytes()
        },
        &mut out,
    )
    .unwrap();
    out[..n].to_vec()
}

/// A service key whose home table is on shard `home` (drawn until one is; keys are
/// uniformly spread, so a few draws do).
fn key_with_home(rng: &mut StdRng, home: usize) -> SigningKey {
    for _ in 0..1000 {
        let sk = SigningKey::from_bytes(&rng.gen());
        if home_shard(sk.verifying_key().as_bytes(), 2) == home {
            return sk;
        }
    }
    panic!("no key with home {home}");
}

fn cookie_with_home(rng: &mut StdRng, home: usize) -> [u8; 20] {
    for _ in 0..1000 {
        let c: [u8; 20] = rng.gen();
        if home_shard(&c, 2) == home {
            return c;
        }
    }
    panic!("no cookie with home {home}");
}

fn intro1(sk: &SigningKey, encrypted: &[u8]) -> Vec<u8> {
    let mut b = [0u8; 498];
    let n = Introduce1::encode(sk.verifying_key().as_bytes(), &[], encrypted, &mut b).unwrap();
    b[..n].to_vec()
}

fn ack_status(cl: &mut Client, acts: &[Action]) -> AckStatus {
    let g = got(cl, acts);
    assert_eq!(g.len(), 1, "one INTRODUCE_ACK: {acts:?}");
    assert_eq!(g[0].1, RelayCmd::INTRODUCE_ACK);
    IntroduceAck::parse(&g[0].2).unwrap().status
}

#[test]
fn introduce_across_shards_with_every_home() {
    let mut rng = seeded("introduce_across_shards_with_every_home");
    let (m1, m2) = (peer(0x21), peer(0x22));
    // The service's circuit on shard 0, the client's on shard 1; the key's home on each.
    for home in 0..2 {
        let mut p = Pair::new();
        let sk = key_with_home(&mut rng, home);
        let (mut svc, kh) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
        send(
            &mut p,
            0,
            &mut svc,
            RelayCmd::ESTABLISH_INTRO,
            &establish_intro(&sk, &kh),
        );
        let [a0, a1] = p.drain();
        assert!(a1.is_empty(), "{a1:?}");
        let g = got(&mut svc, &a0);
        assert_eq!(g.len(), 1, "{a0:?}");
        assert_eq!(g[0].1, RelayCmd::INTRO_ESTABLISHED);
        assert_eq!(p.r[home].core.hs_table_sizes().0, 1);
        assert_eq!(p.r[1 - home].core.hs_table_sizes().0, 0);

        let (mut cl, _) = build(&mut p, 1, relay_chan(2, &m2, false), 2);
        let encrypted: Vec<u8> = (0..300).map(|_| rng.gen()).collect();
        let body = intro1(&sk, &encrypted);
        send(&mut p, 1, &mut cl, RelayCmd::INTRODUCE1, &body);
        let [a0, a1] = p.drain();
        // INTRODUCE2 with the same bytes on shard 0, INTRODUCE_ACK SUCCESS on shard 1.
        let to_svc = got(&mut svc, &a0);
        assert_eq!(to_svc.len(), 1, "{a0:?}");
        assert_eq!((to_svc[0].1, &to_svc[0].2), (RelayCmd::INTRODUCE2, &body));
        assert_eq!(ack_status(&mut cl, &a1), AckStatus::SUCCESS);
        let m = p.r[home].core.metrics();
        assert_eq!(m.hs_cross_shard_intros, 1);
        assert_eq!(p.r[1 - home].core.metrics().hs_cross_shard_intros, 0);
        assert_eq!(p.r[0].core.hs_counters().0.intro1_success, 1);

        // An unknown key: UNKNOWN_ID, the circuit stays, nothing to the service.
        let (mut cl2, _) = build(&mut p, 1, relay_chan(3, &m2, false), 3);
        let other = key_with_home(&mut rng, 1 - home);
        send(
            &mut p,
            1,
            &mut cl2,
            RelayCmd::INTRODUCE1,
            &intro1(&other, &encrypted),
        );
        let [a0, a1] = p.drain();
        assert!(a0.is_empty(), "{a0:?}");
        assert_eq!(ack_status(&mut cl2, &a1), AckStatus::UNKNOWN_ID);
        assert!(destroys(&a1).is_empty());
        assert_eq!(p.r[1 - home].core.hs_counters().0.intro1_unknown_service, 1);

        // The service's circuit goes: its key is forgotten at home.
        p.cell(0, &svc, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
        assert_eq!(p.r[home].core.hs_table_sizes().0, 0);
        assert_eq!(p.r[home].core.metrics().hs_intro_circuits, 0);
    }
}

#[test]
fn same_key_on_the_other_shard_replaces_the_older_circuit() {
    let mut rng = seeded("same_key_on_the_other_shard_replaces_the_older_circuit");
    let (m1, m2) = (peer(0x21), peer(0x22));
    let mut p = Pair::new();
    let sk = key_with_home(&mut rng, 1);
    let (mut old, kh) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
    send(
        &mut p,
        0,
        &mut old,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh),
    );
    p.drain();
    // The service re-establishes on a circuit of shard 1: the older one, on shard 0, is
    // closed with FINISHED (C tor `hs_circuitmap_register_impl`).
    let (mut new, kh2) = build(&mut p, 1, relay_chan(2, &m2, false), 2);
    send(
        &mut p,
        1,
        &mut new,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh2),
    );
    let [a0, a1] = p.drain();
    assert_eq!(
        destroys(&a0),
        vec![(1, old.circ_id, DestroyReason::Finished)]
    );
    assert_eq!(got(&mut new, &a1)[0].1, RelayCmd::INTRO_ESTABLISHED);
    assert_eq!(p.r[0].core.circuit_count(), 0);
    // The old circuit's close did not unregister the new one.
    assert_eq!(p.r[1].core.hs_table_sizes().0, 1);
    assert_eq!(p.r[1].core.hs_counters().0.est_intro_replaced, 1);
    let (mut cl, _) = build(&mut p, 0, relay_chan(3, &m2, false), 3);
    let body = intro1(&sk, &[9; 100]);
    send(&mut p, 0, &mut cl, RelayCmd::INTRODUCE1, &body);
    let [a0, a1] = p.drain();
    assert_eq!(got(&mut new, &a1), vec![(0, RelayCmd::INTRODUCE2, body)]);
    assert_eq!(ack_status(&mut cl, &a0), AckStatus::SUCCESS);
}

#[test]
fn duplicate_cookie_across_shards_is_refused() {
    let mut rng = seeded("duplicate_cookie_across_shards_is_refused");
    let m1 = peer(0x21);
    for home in 0..2 {
        let mut p = Pair::new();
        let cookie = cookie_with_home(&mut rng, home);
        let (mut a, _) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
        send(&mut p, 0, &mut a, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
        let [a0, _] = p.drain();
        assert_eq!(
            got(&mut a, &a0),
            vec![(0, RelayCmd::RENDEZVOUS_ESTABLISHED, vec![])]
        );
        let (mut b, _) = build(&mut p, 1, relay_chan(2, &m1, false), 2);
        send(&mut p, 1, &mut b, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
        let [a0, a1] = p.drain();
        assert!(a0.is_empty(), "{a0:?}");
        assert_eq!(
            destroys(&a1),
            vec![(2, b.circ_id, DestroyReason::TorProtocol)]
        );
        assert_eq!(p.r[home].core.hs_counters().1.est_rend_duplicate_cookie, 1);
        // The first keeps its cookie (the newcomer's close did not remove it).
        assert_eq!(p.r[home].core.hs_table_sizes().1, 1);
        assert_eq!(p.r[0].core.circuit_count(), 1);
    }
}

fn random_keys(rng: &mut StdRng) -> Tor1KeyMaterial {
    let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
    rng.fill(&mut k[..]);
    Tor1KeyMaterial::from_kdf_output(&k)
}

fn reversed(k: &Tor1KeyMaterial) -> Tor1KeyMaterial {
    let mut out = k.clone();
    out.df = k.db;
    out.db = k.df;
    out.kf = k.kb;
    out.kb = k.kf;
    out
}

/// A client circuit on shard `cs` waiting with a cookie whose home is `home`, a service
/// circuit on shard `ss`, RENDEZVOUS1 delivered: the joined pair, with an end-to-end layer.
fn joined(p: &mut Pair, rng: &mut StdRng, cs: usize, ss: usize, home: usize) -> (Client, Client) {
    let (m1, m2) = (peer(0x21), peer(0x22));
    let (mut cl, _) = build(p, cs, relay_chan(1, &m1, false), 1);
    let (mut svc, _) = build(p, ss, relay_chan(2, &m2, false), 2);
    let cookie = cookie_with_home(rng, home);
    send(p, cs, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let out = p.drain();
    assert_eq!(
        got(&mut cl, &out[cs]),
        vec![(0, RelayCmd::RENDEZVOUS_ESTABLISHED, vec![])]
    );
    let info: Vec<u8> = (0..64).map(|_| rng.gen()).collect();
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &info, &mut rend1).unwrap();
    send(p, ss, &mut svc, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    let out = p.drain();
    assert!(got(&mut svc, &out[ss]).is_empty());
    assert_eq!(
        got(&mut cl, &out[cs]),
        vec![(0, RelayCmd::RENDEZVOUS2, info)]
    );
    let e2e = random_keys(rng);
    cl.circ.layers.push(&e2e);
    svc.circ.layers.push(&reversed(&e2e));
    (cl, svc)
}

/// `n` DATA cells from `from` (on shard `fs`) to `to` (on shard `ts`), end to end: each
/// arrives once, in order, with one layer per side.
fn flow(
    p: &mut Pair,
    rng: &mut StdRng,
    from: &mut Client,
    fs: usize,
    to: &mut Client,
    ts: usize,
    n: usize,
) {
    let (mut sent, mut recv) = (Vec::new(), Vec::new());
    for i in 0..n {
        let len = rng.gen_range(1..=498);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let body = relay_cell(from, 1, RelayCmd::DATA, &data);
        // Several cells in flight at once keep their order.
        p.cell_held(fs, from, ChanCmd::RELAY, body);
        if i % 7 == 6 || i == n - 1 {
            p.settle();
        }
        sent.extend_from_slice(&data);
        for a in std::mem::take(&mut p.out[ts]) {
            let c = cells(&[a]);
            assert_eq!(c.len(), 1);
            assert_eq!((c[0].1, c[0].2), (to.circ_id, ChanCmd::RELAY));
            let (hop, cmd, _, d) = to.open(c[0].3);
            assert_eq!((hop, cmd), (1, RelayCmd::DATA), "cell {i}");
            recv.extend_from_slice(&d);
        }
        assert!(p.out[fs].is_empty() || fs == ts);
    }
    assert_eq!(sent.len(), recv.len());
    assert!(sent == recv, "bytes arrive once each, in order");
}

#[test]
fn rendezvous_across_shards_splices_both_ways_and_closes_together() {
    let mut rng = seeded("rendezvous_across_shards_splices_both_ways_and_closes_together");
    for home in 0..2 {
        for close_client in [false, true] {
            let mut p = Pair::new();
            let (mut cl, mut svc) = joined(&mut p, &mut rng, 0, 1, home);
            assert_eq!(p.r[home].core.metrics().hs_cross_shard_joins, 1);
            assert_eq!(p.r[0].core.hs_counters().1.rend1_success, 1);
            // More than a circuit window each way: no flow control at the rendezvous point.
            flow(&mut p, &mut rng, &mut cl, 0, &mut svc, 1, 1100);
            flow(&mut p, &mut rng, &mut svc, 1, &mut cl, 0, 1100);
            assert_eq!(p.r[0].core.metrics().hs_cross_shard_splice_cells, 1100);
            assert_eq!(p.r[1].core.metrics().hs_cross_shard_splice_cells, 1100);

            // One side goes with DESTROY: the other, on the other shard, gets DESTROYED.
            let (s, c, o, other) = if close_client {
                (0, &cl, 1, &svc)
            } else {
                (1, &svc, 0, &cl)
            };
            p.cell(s, c, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
            let out = p.drain();
            assert!(destroys(&out[s]).is_empty());
            assert_eq!(
                destroys(&out[o]),
                vec![(other.chan.id.0, other.circ_id, DestroyReason::Destroyed)]
            );
            assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);
            assert_eq!(p.r[home].core.hs_table_sizes(), (0, 0));
            let closed: u64 = (0..2)
                .map(|s| p.r[s].core.hs_counters().1.splices_closed)
                .sum();
            assert_eq!(closed, 2);
        }
    }
}

#[test]
fn a_partner_that_vanished_mid_flight() {
    let mut rng = seeded("a_partner_that_vanished_mid_flight");
    let (m1, m2) = (peer(0x21), peer(0x22));

    // INTRODUCE1 in flight while the intro circuit closes: UNKNOWN_ID, no panic.
    let mut p = Pair::new();
    let sk = key_with_home(&mut rng, 1);
    let (mut svc, kh) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
    send(
        &mut p,
        0,
        &mut svc,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh),
    );
    let (mut cl, _) = build(&mut p, 1, relay_chan(2, &m2, false), 2);
    p.drain();
    let body = relay_cell(&mut cl, 0, RelayCmd::INTRODUCE1, &intro1(&sk, &[1; 50]));
    p.cell_held(1, &cl, ChanCmd::RELAY, body);
    // Home (shard 1) routes it to shard 0 at once; it is in flight there now.
    assert!(matches!(
        p.flight.front(),
        Some((0, HsMsg::Introduce2 { .. }))
    ));
    let acts = p.r[0].cell(&svc.chan, svc.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(0, acts);
    p.settle();
    let [_, a1] = p.drain();
    assert_eq!(ack_status(&mut cl, &a1), AckStatus::UNKNOWN_ID);
    assert_eq!(p.r[0].core.hs_counters().0.intro1_circuit_dead, 1);

    // RENDEZVOUS1 in flight while the waiting client circuit closes: the service's circuit
    // is closed as for an unknown cookie (TORPROTOCOL).
    let mut p = Pair::new();
    let cookie = cookie_with_home(&mut rng, 1);
    let (mut cl, _) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
    send(&mut p, 0, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let (mut svc, _) = build(&mut p, 1, relay_chan(2, &m2, false), 2);
    p.drain();
    let mut rend1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &[5; 64], &mut rend1).unwrap();
    let body = relay_cell(&mut svc, 0, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    p.cell_held(1, &svc, ChanCmd::RELAY, body);
    assert!(matches!(
        p.flight.front(),
        Some((0, HsMsg::Rendezvous2 { .. }))
    ));
    let acts = p.r[0].cell(&cl.chan, cl.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(0, acts);
    p.settle();
    let [_, a1] = p.drain();
    assert_eq!(
        destroys(&a1),
        vec![(2, svc.circ_id, DestroyReason::TorProtocol)]
    );
    assert_eq!(p.r[0].core.hs_counters().1.rend1_unknown_cookie, 1);
    assert_eq!(p.r[1].core.hs_table_sizes().1, 0);
    assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);

    // The service's circuit closes while its RENDEZVOUS1 is in flight: the client still
    // gets RENDEZVOUS2 (its side joined first), then DESTROY DESTROYED as the other side of
    // any splice.
    let mut p = Pair::new();
    let cookie = cookie_with_home(&mut rng, 0);
    let (mut cl, _) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
    send(&mut p, 0, &mut cl, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie);
    let [a0, _] = p.drain();
    // Read by the client: its backward digest runs over every cell.
    assert_eq!(got(&mut cl, &a0)[0].1, RelayCmd::RENDEZVOUS_ESTABLISHED);
    let (mut svc, _) = build(&mut p, 1, relay_chan(2, &m2, false), 2);
    let n = Rendezvous1::encode(&cookie, &[6; 64], &mut rend1).unwrap();
    let body = relay_cell(&mut svc, 0, RelayCmd::RENDEZVOUS1, &rend1[..n]);
    p.cell_held(1, &svc, ChanCmd::RELAY, body);
    assert!(matches!(
        p.flight.front(),
        Some((0, HsMsg::Rendezvous1 { .. }))
    ));
    let acts = p.r[1].cell(&svc.chan, svc.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(1, acts);
    p.settle();
    let [a0, _] = p.drain();
    assert_eq!(got(&mut cl, &a0)[0].1, RelayCmd::RENDEZVOUS2);
    assert_eq!(
        destroys(&a0),
        vec![(1, cl.circ_id, DestroyReason::Destroyed)]
    );
    assert_eq!(p.r[0].core.circuit_count() + p.r[1].core.circuit_count(), 0);
    assert_eq!(p.r[0].core.hs_table_sizes(), (0, 0));

    // Spliced cells in flight toward a partner that closed: dropped there, and the close
    // reaches the sender's side.
    let mut p = Pair::new();
    let (mut cl, svc) = joined(&mut p, &mut rng, 0, 1, 0);
    for _ in 0..3 {
        let body = relay_cell(&mut cl, 1, RelayCmd::DATA, &[7; 100]);
        p.cell_held(0, &cl, ChanCmd::RELAY, body);
    }
    assert_eq!(p.flight.len(), 3);
    let acts = p.r[1].cell(&svc.chan, svc.circ_id, ChanCmd::DESTROY, [0; CELL_BODY_LEN]);
    p.take(1, acts);
    p.settle();
    let [a0, a1] = p.drain();
    assert!(
        cells(&a1).is_empty(),
        "nothing spliced to a closed circuit: {a1:?}"
    );
    assert_eq!(
        destroys(&a0),
        vec![(1, cl.circ_id, DestroyReason::Destroyed)]
    );
}

/// A one-shard relay still serves both roles (every message is carried out at once).
#[test]
fn one_shard_never_sends_messages() {
    let mut rng = seeded("one_shard_never_sends_messages");
    let (m1, m2) = (peer(0x21), peer(0x22));
    let mut p = Pair {
        r: vec![Relay::new(
            1,
            test_config(),
            "reject *:*",
            TestNet::default(),
        )],
        flight: VecDeque::new(),
        out: [Vec::new(), Vec::new()],
    };
    let sk = SigningKey::from_bytes(&rng.gen());
    let (mut svc, kh) = build(&mut p, 0, relay_chan(1, &m1, false), 1);
    send(
        &mut p,
        0,
        &mut svc,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh),
    );
    let (mut cl, _) = build(&mut p, 0, relay_chan(2, &m2, false), 2);
    send(
        &mut p,
        0,
        &mut cl,
        RelayCmd::INTRODUCE1,
        &intro1(&sk, &[3; 40]),
    );
    assert!(p.flight.is_empty());
    let [a0, _] = p.drain();
    assert_eq!(ack_status(&mut cl, &a0), AckStatus::SUCCESS);
    assert_eq!(p.r[0].core.metrics().hs_cross_shard_intros, 0);
}
