//! Conflux legs on two shards of one exit, through two `RelayCore`s (shard 0 and shard 1)
//! whose `Action::Cfx` messages the test carries in order per direction, as the node's
//! FIFO cross-shard queues do (prop 329; C tor `conflux_pool.c`, `conflux.c`). Real tor1
//! crypto, ntor-v3 with congestion control: the set links by nonce whichever shard is its
//! home, the client's stream data on both legs reaches the exit socket in order, and the
//! exit's data goes out on the remote leg (packaged with that leg's window and crypto on
//! its shard) and then, once the remote leg's window is full, on the local one after a
//! SWITCH; both directions are SHA-256 checked. Then a queue that refuses a cell tears the
//! set down with RESOURCELIMIT. And the set's shard losing its last leg while the remote
//! leg keeps the set (C tor `cfx_del_leg`): the stream stays, anchored on the closed leg's
//! slot, with data both ways over the remote leg (SHA-256 checked), END, XOFF/XON and a
//! window reopened by the remote leg's SENDMEs; the remote leg's close, a relinked local
//! leg or the OOM handler frees the anchor, and nothing stays behind.
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod circuit_common;

use std::collections::VecDeque;
use std::time::Duration;

use circuit_common::*;
use fors::cell::chan::DestroyReason;
use fors::cell::relay::msg::{BeginTarget, RelayMsg, Sendme, Xon};
use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::proto::circuit::{Action, CircuitConfig, ConfluxMsg, RelayIdentity, ShardIdx};
use fors::proto::conflux::{home_shard, DesiredUx, Link, Nonce, Switch};
use fors::proto::stream::StreamHandle;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

const EXIT_LOCAL: &str = "accept 127.0.0.1:*, reject *:*";

fn seed(name: &str) -> u64 {
    let seed = std::env::var("FORS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("{name}: seed {seed} (rerun with FORS_TEST_SEED={seed})");
    seed
}

fn middle() -> RelayIdentity {
    RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([0x33; 20]),
        ed: fors::crypto::ids::Ed25519Identity([0x33; 32]),
    }
}

/// Two shards of one exit; conflux messages in flight per (from, to), FIFO.
struct Exit {
    r: Vec<Relay>,
    flight: [[VecDeque<ConfluxMsg>; 2]; 2],
    /// Every other action, per shard, in order.
    out: [Vec<Action>; 2],
    /// Cfx messages carried, per direction.
    carried: [[u64; 2]; 2],
    /// Cell-carrying messages the queue from→to takes at once (`usize::MAX`: any).
    cap: [[usize; 2]; 2],
    /// How many more conflux Forgets the queues refuse (a full queue).
    refuse_forgets: usize,
}

impl Exit {
    fn new() -> Exit {
        Exit::with_pool(16 * 1024)
    }

    /// With `pool_cells` cell buffers per shard (the memory cap).
    fn with_pool(pool_cells: usize) -> Exit {
        let r = (0..2)
            .map(|s| {
                let mut cfg = CircuitConfig {
                    shard: ShardIdx(s),
                    ..test_config()
                };
                cfg.pool_cells = pool_cells;
                cfg.max_queue_per_circuit = 4096;
                let net = TestNet {
                    known: vec![middle().rsa],
                    reentry: vec![],
                };
                let mut r = Relay::new(9, cfg, EXIT_LOCAL, net);
                r.core.set_shard_count(2);
                r
            })
            .collect();
        Exit {
            r,
            flight: Default::default(),
            out: [Vec::new(), Vec::new()],
            carried: [[0; 2]; 2],
            cap: [[usize::MAX; 2]; 2],
            refuse_forgets: 0,
        }
    }

    /// Sorts shard `s`'s actions: conflux messages go in flight (or back, refused, if the
    /// queue is at its cap), the rest to `out[s]`.
    fn take(&mut self, s: usize, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Cfx { to, msg } => {
                    let to = usize::from(to.0);
                    assert_ne!(to, s, "a shard never messages itself");
                    let q = &self.flight[s][to];
                    let cells = q.iter().filter(|m| m.carries_cell()).count();
                    // The message's kind is private to the core: its Debug names it.
                    let refused_forget =
                        self.refuse_forgets > 0 && format!("{msg:?}").contains("Forget");
                    if refused_forget {
                        self.refuse_forgets -= 1;
                    }
                    if refused_forget || (msg.carries_cell() && cells >= self.cap[s][to]) {
                        let (_, more) =
                            self.r[s].io(|c, io| c.cfx_cross_refused(ShardIdx(to as u16), msg, io));
                        self.take(s, more);
                    } else {
                        self.flight[s][to].push_back(msg);
                    }
                }
                a => self.out[s].push(a),
            }
        }
    }

    /// Delivers the first message in flight from `from`; false if none.
    fn step(&mut self, from: usize) -> bool {
        let to = 1 - from;
        let Some(msg) = self.flight[from][to].pop_front() else {
            return false;
        };
        self.carried[from][to] += 1;
        let (_, acts) = self.r[to].io(|c, io| c.handle_cfx_msg(ShardIdx(from as u16), msg, io));
        self.take(to, acts);
        true
    }

    /// Delivers until nothing is in flight (bounded).
    fn settle(&mut self) {
        for _ in 0..100_000 {
            if !self.step(0) && !self.step(1) {
                return;
            }
        }
        panic!("conflux messages did not settle");
    }

    /// Delivers a random number of messages from random directions.
    fn some(&mut self, rng: &mut StdRng) {
        for _ in 0..rng.gen_range(0..4) {
            let from = rng.gen_range(0..2);
            self.step(from);
        }
    }

    /// A relay cell from `cl` (on shard `s`); its actions are sorted.
    fn send(&mut self, s: usize, cl: &mut Client, msg: &RelayMsg<'_>, sid: u16) {
        let acts = cl.send(&mut self.r[s], 0, ChanCmd::RELAY, msg, sid);
        self.take(s, acts);
    }

    fn advance(&mut self, d: Duration) {
        for r in &mut self.r {
            r.advance(d);
        }
    }

    fn take_out(&mut self, s: usize) -> Vec<Action> {
        std::mem::take(&mut self.out[s])
    }
}

fn other(cmd: RelayCmd, body: &[u8]) -> RelayMsg<'_> {
    RelayMsg::Other { cmd, body }
}

fn link_body(nonce: Nonce) -> Vec<u8> {
    let mut b = [0u8; 64];
    let n = Link {
        nonce,
        last_seqno_sent: 0,
        last_seqno_recv: 0,
        desired_ux: DesiredUx::HighThroughput,
    }
    .encode(&mut b)
    .unwrap();
    b[..n].to_vec()
}

fn nonce_at(rng: &mut StdRng, home: usize) -> Nonce {
    loop {
        let n: Nonce = rng.gen();
        if home_shard(&n, 2, &CircuitConfig::for_tests().home_key) == home {
            return n;
        }
    }
}

/// The client's side of one set: which cells it sent on which leg, and the exit's cells
/// put back in sequence order from both legs (prop 329: each leg's cells follow its own
/// counter, a SWITCH moves it).
struct ClientSet {
    /// Multiplexed cells sent on the set (the absolute sequence number of the last).
    sent: u64,
    /// Per leg: the sequence number its last cell (or SWITCH) reached.
    leg_sent: [u64; 2],
    leg_recv: [u64; 2],
    /// (sequence number, data) of the exit's DATA cells.
    got: Vec<(u64, Vec<u8>)>,
    switches_seen: u32,
}

impl ClientSet {
    fn new() -> ClientSet {
        ClientSet {
            sent: 0,
            leg_sent: [0; 2],
            leg_recv: [0; 2],
            got: Vec::new(),
            switches_seen: 0,
        }
    }

    /// Sends a multiplexed message on leg `l` (on shard `shards[l]`), after the SWITCH
    /// that moves that leg's counter to the set's, as C tor's client does.
    fn send(
        &mut self,
        ex: &mut Exit,
        legs: &mut [Client; 2],
        shards: [usize; 2],
        l: usize,
        msg: &RelayMsg<'_>,
        sid: u16,
    ) {
        if self.leg_sent[l] != self.sent {
            let rel = (self.sent - self.leg_sent[l]) as u32;
            let mut b = [0u8; 4];
            Switch { relative_seq: rel }.encode(&mut b).unwrap();
            ex.send(
                shards[l],
                &mut legs[l],
                &other(RelayCmd::CONFLUX_SWITCH, &b),
                0,
            );
            self.leg_sent[l] = self.sent;
        }
        ex.send(shards[l], &mut legs[l], msg, sid);
        self.sent += 1;
        self.leg_sent[l] = self.sent;
    }

    /// Reads the exit's cells to leg `l` in `acts`.
    fn read(&mut self, cl: &mut Client, l: usize, acts: &[Action]) -> Vec<(RelayCmd, Vec<u8>)> {
        let mut other = Vec::new();
        for (_, cmd, _, data) in cl.open_all(acts) {
            match cmd {
                RelayCmd::CONFLUX_SWITCH => {
                    self.switches_seen += 1;
                    self.leg_recv[l] += u64::from(Switch::parse(&data).unwrap().relative_seq);
                }
                RelayCmd::DATA | RelayCmd::CONNECTED | RelayCmd::END => {
                    self.leg_recv[l] += 1;
                    if cmd == RelayCmd::DATA {
                        self.got.push((self.leg_recv[l], data));
                    } else {
                        other.push((cmd, data));
                    }
                }
                _ => other.push((cmd, data)),
            }
        }
        other
    }

    /// The exit's DATA in sequence order.
    fn bytes(&mut self) -> Vec<u8> {
        self.got.sort_by_key(|g| g.0);
        for w in self.got.windows(2) {
            assert_ne!(w[0].0, w[1].0, "two cells with one sequence number");
        }
        self.got.iter().flat_map(|g| g.1.iter().copied()).collect()
    }
}

fn written(acts: &[Action], stream: StreamHandle) -> Vec<u8> {
    acts.iter()
        .filter_map(|a| match a {
            Action::StreamWrite { stream: s, data } if *s == stream => Some(data.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}

/// Links leg 0 on shard `shards[0]` (it creates the set, so that shard owns it) and leg 1
/// on `shards[1]`, for a nonce homed on `home`; leg 1 gets the lower RTT.
fn linked(ex: &mut Exit, rng: &mut StdRng, home: usize, shards: [usize; 2]) -> [Client; 2] {
    linked_nonce(ex, rng, home, shards).0
}

/// [`linked`], with the set's nonce.
fn linked_nonce(
    ex: &mut Exit,
    rng: &mut StdRng,
    home: usize,
    shards: [usize; 2],
) -> ([Client; 2], Nonce) {
    let mut legs = [0, 1].map(|l| {
        let mut cl = Client::new(relay_chan(10 + l as u64, &middle(), false), 0x8000_0001);
        cl.create(&mut ex.r[shards[l]], Hs::NtorV3 { cc: true });
        cl
    });
    let n = nonce_at(rng, home);
    for l in 0..2 {
        ex.send(
            shards[l],
            &mut legs[l],
            &other(RelayCmd::CONFLUX_LINK, &link_body(n)),
            0,
        );
        ex.settle();
        let acts = ex.take_out(shards[l]);
        let got = legs[l].open_all(&acts);
        assert_eq!(got.len(), 1, "leg {l}: {acts:?}");
        assert_eq!(got[0].1, RelayCmd::CONFLUX_LINKED, "leg {l}");
        assert_eq!(Link::parse(&got[0].3).unwrap().nonce, n);
    }
    // LINKED_ACKs: leg 1 after 5 ms, leg 0 after 40 ms (RTT measured on the leg's shard).
    ex.advance(Duration::from_millis(5));
    ex.send(
        shards[1],
        &mut legs[1],
        &other(RelayCmd::CONFLUX_LINKED_ACK, &[]),
        0,
    );
    ex.advance(Duration::from_millis(35));
    ex.send(
        shards[0],
        &mut legs[0],
        &other(RelayCmd::CONFLUX_LINKED_ACK, &[]),
        0,
    );
    ex.settle();
    let owner = shards[0];
    let m = ex.r[owner].core.metrics();
    assert_eq!((m.conflux_sets, m.conflux_legs), (1, 2), "on the owner");
    let m = ex.r[1 - owner].core.metrics();
    assert_eq!(
        (m.conflux_sets, m.conflux_legs),
        (0, 0),
        "no set on the other shard"
    );
    (legs, n)
}

#[test]
fn legs_on_two_cores_carry_a_stream_both_ways_in_order() {
    let seed = seed("legs_on_two_cores_carry_a_stream_both_ways_in_order");
    let mut rng = StdRng::seed_from_u64(seed);
    for home in 0..2 {
        for owner in 0..2 {
            let shards = [owner, 1 - owner];
            let mut ex = Exit::new();
            let mut legs = linked(&mut ex, &mut rng, home, shards);
            let mut cs = ClientSet::new();

            // BEGIN on leg 0 (the owner's shard): the exit connects there.
            let begin = begin_msg(BeginTarget::Ipv4(std::net::Ipv4Addr::LOCALHOST), 80);
            cs.send(&mut ex, &mut legs, shards, 0, &begin, 7);
            ex.settle();
            let acts = ex.take_out(owner);
            let (stream, addr) = acts
                .iter()
                .find_map(|a| match a {
                    Action::Connect { stream, addr } => Some((*stream, *addr)),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no Connect on the owner: {acts:?}"));
            let (r, acts) = ex.r[owner].io(|c, io| c.stream_connected(stream, addr, io));
            r.unwrap();
            ex.take(owner, acts);
            ex.settle();
            // CONNECTED goes on the lower-RTT leg 1, which lives on the other shard.
            let acts1 = ex.take_out(shards[1]);
            let got = cs.read(&mut legs[1], 1, &acts1);
            assert_eq!(got.len(), 1, "{acts1:?}");
            assert_eq!(got[0].0, RelayCmd::CONNECTED);

            // Client → exit: 120 DATA cells over both legs in random runs, cross-shard
            // messages delivered at random points in between.
            let up: Vec<u8> = (0..120 * 400).map(|_| rng.gen()).collect();
            let mut l = 0;
            for chunk in up.chunks(400) {
                if rng.gen_ratio(1, 4) {
                    l = 1 - l;
                }
                cs.send(&mut ex, &mut legs, shards, l, &RelayMsg::Data(chunk), 7);
                ex.some(&mut rng);
            }
            ex.settle();
            let mut got = Vec::new();
            for (i, s) in shards.into_iter().enumerate() {
                let acts = ex.take_out(s);
                got.extend(written(&acts, stream));
                // The exit's circuit SENDMEs (each leg's own), read to keep its crypto.
                let other = cs.read(&mut legs[i], i, &acts);
                assert!(
                    other.iter().all(|o| o.0 == RelayCmd::SENDME),
                    "leg {i}: {other:?}"
                );
            }
            assert_eq!(got.len(), up.len());
            assert_eq!(
                Sha256::digest(&got),
                Sha256::digest(&up),
                "client → exit bytes differ (home {home}, owner {owner})"
            );
            assert!(
                ex.carried[shards[1]][owner] > 0,
                "leg 1's cells crossed to the owner"
            );

            // Exit → client: more than the remote leg's congestion window, so the data
            // goes on leg 1 (remote, lower RTT) until its window is full, then on leg 0.
            let down: Vec<u8> = (0..1000 * 498).map(|_| rng.gen()).collect();
            let (n, acts) = ex.r[owner].io(|c, io| c.stream_data(stream, &down, io));
            let n = n.unwrap();
            ex.take(owner, acts);
            ex.settle();
            assert!(
                n > 0 && n < down.len(),
                "the windows bound what was taken: {n}"
            );
            for (i, s) in shards.into_iter().enumerate() {
                let acts = ex.take_out(s);
                let other = cs.read(&mut legs[i], i, &acts);
                assert!(other.is_empty(), "leg {i}: {other:?}");
            }
            let got = cs.bytes();
            assert_eq!(got.len(), n);
            assert_eq!(
                Sha256::digest(&got),
                Sha256::digest(&down[..n]),
                "exit → client bytes differ (home {home}, owner {owner})"
            );
            assert!(
                cs.switches_seen >= 1,
                "the exit moved to leg 0 with a SWITCH"
            );
            assert!(
                cs.leg_recv[0] > 1 && cs.leg_recv[1] > 1,
                "both legs carried DATA"
            );
            assert!(
                ex.carried[owner][shards[1]] > 0,
                "Sends crossed to leg 1's shard"
            );
        }
    }
}

#[test]
fn a_cross_queue_that_refuses_a_cell_tears_the_set_down() {
    let seed = seed("a_cross_queue_that_refuses_a_cell_tears_the_set_down");
    let mut rng = StdRng::seed_from_u64(seed);
    let home = rng.gen_range(0..2);
    let shards = [0, 1];
    let mut ex = Exit::new();
    let mut legs = linked(&mut ex, &mut rng, home, shards);
    let mut cs = ClientSet::new();
    let begin = begin_msg(BeginTarget::Ipv4(std::net::Ipv4Addr::LOCALHOST), 80);
    cs.send(&mut ex, &mut legs, shards, 0, &begin, 7);
    ex.settle();
    ex.take_out(0);
    // The queue from leg 1's shard to the owner takes no cell: leg 1's DATA cannot reach
    // the set, so leg 1 closes (RESOURCELIMIT) and the owner tears the set down.
    ex.cap[1][0] = 0;
    cs.send(&mut ex, &mut legs, shards, 1, &RelayMsg::Data(b"lost"), 7);
    ex.settle();
    let destroys = |acts: &[Action], cl: &Client| -> Vec<DestroyReason> {
        cells(acts)
            .into_iter()
            .filter(|(ch, id, cmd, _)| {
                *ch == cl.chan.id && *id == cl.circ_id && *cmd == ChanCmd::DESTROY
            })
            .map(|(_, _, _, b)| destroy_reason(&b))
            .collect()
    };
    let a1 = ex.take_out(1);
    assert_eq!(destroys(&a1, &legs[1]), vec![DestroyReason::ResourceLimit]);
    let a0 = ex.take_out(0);
    assert_eq!(destroys(&a0, &legs[0]).len(), 1, "{a0:?}");
    assert!(a0.iter().any(|a| matches!(a, Action::StreamClose { .. })));
    for s in 0..2 {
        let m = ex.r[s].core.metrics();
        assert_eq!((m.conflux_sets, m.conflux_legs), (0, 0), "shard {s}");
    }
}

/// DESTROY cells to client leg `cl` among `acts`, by reason.
fn destroys_to(acts: &[Action], cl: &Client) -> Vec<DestroyReason> {
    cells(acts)
        .into_iter()
        .filter(|(ch, id, cmd, _)| {
            *ch == cl.chan.id && *id == cl.circ_id && *cmd == ChanCmd::DESTROY
        })
        .map(|(_, _, _, b)| destroy_reason(&b))
        .collect()
}

/// A set linked with leg 0 on shard 0 (the owner) and leg 1 on shard 1, a stream opened
/// on it (BEGIN on leg 0, CONNECTED on leg 1), and client DATA on leg 1 so that leg 1
/// carries the highest numbers both ways: leg 0's close then keeps the set (C tor
/// `cfx_del_leg`). Returns the legs, the client's set state, the stream and the bytes
/// the exit socket got so far.
fn stream_on_remote_leg(
    ex: &mut Exit,
    rng: &mut StdRng,
    home: usize,
) -> (
    [Client; 2],
    ClientSet,
    StreamHandle,
    Vec<u8>,
    Vec<u8>,
    Nonce,
) {
    let shards = [0, 1];
    let (mut legs, nonce) = linked_nonce(ex, rng, home, shards);
    let mut cs = ClientSet::new();
    let begin = begin_msg(BeginTarget::Ipv4(std::net::Ipv4Addr::LOCALHOST), 80);
    cs.send(ex, &mut legs, shards, 0, &begin, 7);
    ex.settle();
    let acts = ex.take_out(0);
    let (stream, addr) = acts
        .iter()
        .find_map(|a| match a {
            Action::Connect { stream, addr } => Some((*stream, *addr)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no Connect on the owner: {acts:?}"));
    let (r, acts) = ex.r[0].io(|c, io| c.stream_connected(stream, addr, io));
    r.unwrap();
    ex.take(0, acts);
    ex.settle();
    let acts1 = ex.take_out(1);
    let got = cs.read(&mut legs[1], 1, &acts1);
    assert_eq!(got.len(), 1, "{acts1:?}");
    assert_eq!(
        got[0].0,
        RelayCmd::CONNECTED,
        "CONNECTED on the lower-RTT leg 1"
    );
    let up: Vec<u8> = (0..20 * 400).map(|_| rng.gen()).collect();
    for chunk in up.chunks(400) {
        cs.send(ex, &mut legs, shards, 1, &RelayMsg::Data(chunk), 7);
        ex.some(rng);
    }
    ex.settle();
    let got = written(&ex.take_out(0), stream);
    let _ = ex.take_out(1);
    (legs, cs, stream, up, got, nonce)
}

#[test]
fn the_sets_shard_losing_its_last_leg_keeps_the_stream_on_the_remote_leg() {
    let seed = seed("the_sets_shard_losing_its_last_leg_keeps_the_stream_on_the_remote_leg");
    let mut rng = StdRng::seed_from_u64(seed);
    for home in 0..2 {
        let mut ex = Exit::new();
        let (mut legs, mut cs, stream, mut up, mut got_up, _) =
            stream_on_remote_leg(&mut ex, &mut rng, home);
        let shards = [0, 1];

        // The client closes leg 0, the only leg on the set's shard. Leg 1 carries the
        // highest numbers and is the exit's sending leg, so C tor keeps the set and its
        // streams: so does Fors, the closed leg's slot anchoring the stream.
        let acts = ex.r[0].cell(&legs[0].chan, legs[0].circ_id, ChanCmd::DESTROY, [0u8; 509]);
        ex.take(0, acts);
        ex.settle();
        let a0 = ex.take_out(0);
        assert!(
            !a0.iter()
                .any(|a| matches!(a, Action::StreamClose { .. } | Action::CircuitClosed { .. })),
            "home {home}: {a0:?}"
        );
        assert!(
            destroys_to(&a0, &legs[0]).is_empty(),
            "DESTROY received, not sent"
        );
        let a1 = ex.take_out(1);
        assert!(destroys_to(&a1, &legs[1]).is_empty(), "leg 1 lives: {a1:?}");
        let m = ex.r[0].core.metrics();
        assert_eq!(
            (m.conflux_sets, m.conflux_legs, m.conflux_remote_legs),
            (1, 1, 1),
            "home {home}"
        );
        assert_eq!((m.conflux_anchors, m.conflux_anchors_total), (1, 1));
        // The old leg's channel ID no longer names a circuit, the anchor keeps no channel
        // in use, and that channel's close touches nothing.
        assert!(!ex.r[0]
            .core
            .circ_id_in_use(legs[0].chan.id, legs[0].circ_id));
        let mut in_use = std::collections::HashSet::new();
        // The first call also reports channels recorded since the last one; the second,
        // only what the circuit table holds.
        ex.r[0].core.channels_in_use(&mut in_use);
        in_use.clear();
        ex.r[0].core.channels_in_use(&mut in_use);
        assert!(!in_use.contains(&legs[0].chan.id), "{in_use:?}");
        let (_, acts) = ex.r[0].io(|c, io| c.channel_closed(legs[0].chan.id, io));
        assert!(acts.is_empty(), "{acts:?}");
        assert_eq!(ex.r[0].core.metrics().conflux_anchors, 1);

        // Client → exit keeps flowing on leg 1 (its shard forwards to the owner).
        let more: Vec<u8> = (0..40 * 400).map(|_| rng.gen()).collect();
        for chunk in more.chunks(400) {
            cs.send(&mut ex, &mut legs, shards, 1, &RelayMsg::Data(chunk), 7);
            ex.some(&mut rng);
        }
        ex.settle();
        up.extend_from_slice(&more);
        got_up.extend(written(&ex.take_out(0), stream));
        let other = cs.read(&mut legs[1], 1, &ex.take_out(1));
        assert!(
            other.iter().all(|o| o.0 == RelayCmd::SENDME),
            "leg 1: {other:?}"
        );
        assert_eq!(
            Sha256::digest(&got_up),
            Sha256::digest(&up),
            "client → exit bytes differ (home {home})"
        );

        // Exit → client: on leg 1 only, packaged on its shard.
        let down: Vec<u8> = (0..200 * 498).map(|_| rng.gen()).collect();
        let (n, acts) = ex.r[0].io(|c, io| c.stream_data(stream, &down, io));
        let n = n.unwrap();
        ex.take(0, acts);
        ex.settle();
        assert!(n > 0, "the remote leg's window let some go");
        assert!(
            cells(&ex.take_out(0)).is_empty(),
            "nothing leaves on shard 0: it has no channel for the set"
        );
        let other = cs.read(&mut legs[1], 1, &ex.take_out(1));
        assert!(other.is_empty(), "leg 1: {other:?}");
        let got = cs.bytes();
        assert_eq!(got.len(), n);
        assert_eq!(
            Sha256::digest(&got),
            Sha256::digest(&down[..n]),
            "exit → client bytes differ (home {home})"
        );

        // The exit socket's EOF: END goes out on leg 1.
        let (r, acts) = ex.r[0]
            .io(|c, io| c.stream_closed(stream, fors::cell::relay::msg::EndReason::Done, io));
        r.unwrap();
        ex.take(0, acts);
        ex.settle();
        let other = cs.read(&mut legs[1], 1, &ex.take_out(1));
        assert_eq!(other.len(), 1, "{other:?}");
        assert_eq!(other[0].0, RelayCmd::END);

        // The last leg closes: the set ends, the anchor is freed, nothing stays.
        let acts = ex.r[1].cell(&legs[1].chan, legs[1].circ_id, ChanCmd::DESTROY, [0u8; 509]);
        ex.take(1, acts);
        ex.settle();
        let a0 = ex.take_out(0);
        assert!(
            a0.iter().any(|a| matches!(a, Action::CircuitClosed { .. })),
            "{a0:?}"
        );
        assert!(cells(&a0).is_empty(), "an anchor has no channel: {a0:?}");
        for s in 0..2 {
            let m = ex.r[s].core.metrics();
            assert_eq!(
                (
                    m.conflux_sets,
                    m.conflux_legs,
                    m.conflux_remote_legs,
                    m.conflux_anchors,
                    m.circuits,
                    m.streams
                ),
                (0, 0, 0, 0, 0, 0),
                "home {home}, shard {s}"
            );
            assert_eq!(m.conflux_dir_entries, 0, "shard {s} forgot the nonce");
        }
    }
}

#[test]
fn an_anchored_stream_ends_when_the_remote_leg_closes() {
    let seed = seed("an_anchored_stream_ends_when_the_remote_leg_closes");
    let mut rng = StdRng::seed_from_u64(seed);
    let home = rng.gen_range(0..2);
    let mut ex = Exit::new();
    let (legs, _cs, stream, up, got_up, _) = stream_on_remote_leg(&mut ex, &mut rng, home);
    assert_eq!(Sha256::digest(&got_up), Sha256::digest(&up));
    let acts = ex.r[0].cell(&legs[0].chan, legs[0].circ_id, ChanCmd::DESTROY, [0u8; 509]);
    ex.take(0, acts);
    ex.settle();
    let _ = (ex.take_out(0), ex.take_out(1));
    assert_eq!(ex.r[0].core.metrics().conflux_anchors, 1);
    // Leg 1's channel goes: the set's last leg, so its open stream closes with it (C tor
    // frees a circuit's streams without END: there is no circuit to send it on).
    let (_, acts) = ex.r[1].io(|c, io| c.channel_closed(legs[1].chan.id, io));
    ex.take(1, acts);
    ex.settle();
    let a0 = ex.take_out(0);
    assert!(
        a0.iter()
            .any(|a| matches!(a, Action::StreamClose { stream: s } if *s == stream)),
        "{a0:?}"
    );
    assert!(cells(&a0).is_empty(), "{a0:?}");
    for s in 0..2 {
        let m = ex.r[s].core.metrics();
        assert_eq!(
            (m.conflux_sets, m.conflux_anchors, m.circuits, m.streams),
            (0, 0, 0, 0),
            "shard {s}"
        );
        assert_eq!(m.conflux_dir_entries, 0, "shard {s}");
    }
}

/// Closes leg 0 (the set's only leg on shard 0) so that its slot anchors the stream.
fn anchor_leg0(ex: &mut Exit, legs: &[Client; 2]) {
    let acts = ex.r[0].cell(&legs[0].chan, legs[0].circ_id, ChanCmd::DESTROY, [0u8; 509]);
    ex.take(0, acts);
    ex.settle();
    let _ = (ex.take_out(0), ex.take_out(1));
    assert_eq!(ex.r[0].core.metrics().conflux_anchors, 1);
}

#[test]
fn a_new_local_leg_takes_the_anchored_streams() {
    let seed = seed("a_new_local_leg_takes_the_anchored_streams");
    let mut rng = StdRng::seed_from_u64(seed);
    let home = rng.gen_range(0..2);
    let mut ex = Exit::new();
    let (mut legs, mut cs, stream, mut up, mut got_up, nonce) =
        stream_on_remote_leg(&mut ex, &mut rng, home);
    anchor_leg0(&mut ex, &legs);
    // The client relinks a new leg on shard 0 with the set's nonce (C tor's client
    // replaces a closed leg; the exit adds it to the linked set).
    let mut fresh = Client::new(relay_chan(12, &middle(), false), 0x8000_0003);
    fresh.create(&mut ex.r[0], Hs::NtorV3 { cc: true });
    ex.send(
        0,
        &mut fresh,
        &other(RelayCmd::CONFLUX_LINK, &link_body(nonce)),
        0,
    );
    ex.settle();
    let acts = ex.take_out(0);
    let got = fresh.open_all(&acts);
    assert_eq!(got.len(), 1, "{acts:?}");
    assert_eq!(got[0].1, RelayCmd::CONFLUX_LINKED);
    let m = ex.r[0].core.metrics();
    assert_eq!(
        (
            m.conflux_legs,
            m.conflux_anchors,
            m.conflux_anchors_total,
            m.circuits
        ),
        (2, 0, 1, 1),
        "the anchor gave its streams to the new leg and was freed"
    );
    assert!(
        !acts.iter().any(|a| matches!(a, Action::StreamClose { .. })),
        "{acts:?}"
    );
    // The new leg's counters start at the LINK's (0): the client SWITCHes it forward.
    legs[0] = fresh;
    cs.leg_sent[0] = 0;
    cs.leg_recv[0] = 0;
    let more: Vec<u8> = (0..30 * 400).map(|_| rng.gen()).collect();
    for chunk in more.chunks(400) {
        cs.send(&mut ex, &mut legs, [0, 1], 0, &RelayMsg::Data(chunk), 7);
        ex.some(&mut rng);
    }
    ex.settle();
    up.extend_from_slice(&more);
    got_up.extend(written(&ex.take_out(0), stream));
    let _ = ex.take_out(1);
    assert_eq!(
        Sha256::digest(&got_up),
        Sha256::digest(&up),
        "client → exit bytes over the new leg differ"
    );
    // The new leg carried the newest client cells: its close breaks the set (C tor
    // `cfx_del_leg`), so the stream ends and leg 1 is closed with FINISHED.
    let acts = ex.r[0].cell(&legs[0].chan, legs[0].circ_id, ChanCmd::DESTROY, [0u8; 509]);
    ex.take(0, acts);
    ex.settle();
    let a0 = ex.take_out(0);
    assert!(
        a0.iter()
            .any(|a| matches!(a, Action::StreamClose { stream: s } if *s == stream)),
        "{a0:?}"
    );
    assert_eq!(
        destroys_to(&ex.take_out(1), &legs[1]),
        vec![DestroyReason::Finished]
    );
    for s in 0..2 {
        let m = ex.r[s].core.metrics();
        assert_eq!(
            (m.conflux_sets, m.conflux_anchors, m.circuits, m.streams),
            (0, 0, 0, 0),
            "shard {s}"
        );
    }
}

#[test]
fn the_oom_handler_frees_an_anchor_and_its_set() {
    let seed = seed("the_oom_handler_frees_an_anchor_and_its_set");
    let mut rng = StdRng::seed_from_u64(seed);
    let home = rng.gen_range(0..2);
    let mut ex = Exit::with_pool(512);
    let (mut legs, mut cs, stream, _, _, _) = stream_on_remote_leg(&mut ex, &mut rng, home);
    anchor_leg0(&mut ex, &legs);
    // The exit socket stops taking data: the client's DATA is held in the anchored stream's
    // buffer (XOFF goes out on leg 1; this client ignores it) until shard 0's memory cap
    // is reached, and the OOM handler picks the anchor (the only circuit holding cells).
    let (r, acts) = ex.r[0].io(|c, io| c.stream_write_blocked(stream, true, io));
    r.unwrap();
    ex.take(0, acts);
    let mut killed = false;
    for _ in 0..2000 {
        cs.send(
            &mut ex,
            &mut legs,
            [0, 1],
            1,
            &RelayMsg::Data(&[7u8; 400]),
            7,
        );
        ex.settle();
        if ex.r[0].core.metrics().oom_kills > 0 {
            killed = true;
            break;
        }
    }
    assert!(killed, "the memory cap was reached");
    let a0 = ex.take_out(0);
    assert!(
        a0.iter()
            .any(|a| matches!(a, Action::StreamClose { stream: s } if *s == stream)),
        "{a0:?}"
    );
    assert!(cells(&a0).is_empty(), "an anchor has no channel: {a0:?}");
    // The set goes with its streams: leg 1 is closed with the OOM's reason.
    let a1 = ex.take_out(1);
    assert_eq!(
        destroys_to(&a1, &legs[1]),
        vec![DestroyReason::ResourceLimit]
    );
    for s in 0..2 {
        let m = ex.r[s].core.metrics();
        assert_eq!(
            (
                m.conflux_sets,
                m.conflux_anchors,
                m.circuits,
                m.streams,
                m.queued_cells
            ),
            (0, 0, 0, 0, 0),
            "shard {s}"
        );
        assert_eq!(m.conflux_dir_entries, 0, "shard {s}");
    }
}

#[test]
fn an_anchored_streams_xoff_and_xon_follow_the_client() {
    let seed = seed("an_anchored_streams_xoff_and_xon_follow_the_client");
    let mut rng = StdRng::seed_from_u64(seed);
    let home = rng.gen_range(0..2);
    let mut ex = Exit::new();
    let (mut legs, mut cs, stream, _, _, _) = stream_on_remote_leg(&mut ex, &mut rng, home);
    anchor_leg0(&mut ex, &legs);
    let is_pause = |a: &Action| matches!(a, Action::PauseStreamRead { stream: s } if *s == stream);
    let is_resume =
        |a: &Action| matches!(a, Action::ResumeStreamRead { stream: s } if *s == stream);
    // XOFF on leg 1 reaches the anchored stream: its socket is paused, nothing packaged.
    cs.send(
        &mut ex,
        &mut legs,
        [0, 1],
        1,
        &RelayMsg::Xoff(Default::default()),
        7,
    );
    ex.settle();
    let a0 = ex.take_out(0);
    assert_eq!(a0.iter().filter(|a| is_pause(a)).count(), 1, "{a0:?}");
    let (n, acts) = ex.r[0].io(|c, io| c.stream_data(stream, &[7u8; 1000], io));
    assert_eq!(n.unwrap(), 0);
    ex.take(0, acts);
    ex.settle();
    assert!(cs.read(&mut legs[1], 1, &ex.take_out(1)).is_empty());
    assert_eq!(ex.r[0].core.metrics().xoff_received, 1);
    // XON resumes reading, and the data goes out on leg 1.
    cs.send(
        &mut ex,
        &mut legs,
        [0, 1],
        1,
        &RelayMsg::Xon(Xon { kbps_ewma: 0 }),
        7,
    );
    ex.settle();
    let a0 = ex.take_out(0);
    assert_eq!(a0.iter().filter(|a| is_resume(a)).count(), 1, "{a0:?}");
    let down: Vec<u8> = (0..1000).map(|_| rng.gen()).collect();
    let (n, acts) = ex.r[0].io(|c, io| c.stream_data(stream, &down, io));
    assert_eq!(n.unwrap(), down.len());
    ex.take(0, acts);
    ex.settle();
    let other = cs.read(&mut legs[1], 1, &ex.take_out(1));
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(Sha256::digest(cs.bytes()), Sha256::digest(&down));
}

#[test]
fn an_anchored_stream_paused_on_a_full_window_resumes_at_the_remote_legs_sendme() {
    let seed = seed("an_anchored_stream_paused_on_a_full_window_resumes_at_the_remote_legs_sendme");
    let mut rng = StdRng::seed_from_u64(seed);
    let home = rng.gen_range(0..2);
    let mut ex = Exit::new();
    let (mut legs, mut cs, stream, _, _, _) = stream_on_remote_leg(&mut ex, &mut rng, home);
    anchor_leg0(&mut ex, &legs);
    // More than leg 1's congestion window: the socket is paused once it is full.
    let down: Vec<u8> = (0..1000 * 498).map(|_| rng.gen()).collect();
    let (n, acts) = ex.r[0].io(|c, io| c.stream_data(stream, &down, io));
    let n = n.unwrap();
    assert!(n > 0 && n < down.len(), "{n}");
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::PauseStreamRead { stream: s } if *s == stream)),
        "{acts:?}"
    );
    ex.take(0, acts);
    ex.settle();
    // The client reads leg 1's cells one by one and keeps the tag of each cell that
    // prompts a SENDME (every `sendme_inc`-th DATA cell, 31 by default).
    let acts1 = ex.take_out(1);
    let mut tags = Vec::new();
    for a in acts1.chunks(1) {
        let before = cs.got.len();
        let other = cs.read(&mut legs[1], 1, a);
        assert!(other.is_empty(), "{other:?}");
        if cs.got.len() > before && cs.got.len() % 31 == 0 {
            tags.push(legs[1].last_tag(0));
        }
    }
    assert!(!tags.is_empty());
    // Its SENDMEs on leg 1: the leg has room again, its shard reports it, the owner
    // resumes the anchored stream's socket.
    ex.advance(Duration::from_millis(50));
    for tag in &tags {
        ex.send(1, &mut legs[1], &RelayMsg::Sendme(Sendme::V1 { tag }), 0);
    }
    ex.settle();
    let a1 = ex.take_out(1);
    assert!(destroys_to(&a1, &legs[1]).is_empty(), "{a1:?}");
    let a0 = ex.take_out(0);
    assert!(
        a0.iter()
            .any(|a| matches!(a, Action::ResumeStreamRead { stream: s } if *s == stream)),
        "{a0:?}"
    );
    // The rest goes out on leg 1.
    let (m, acts) = ex.r[0].io(|c, io| c.stream_data(stream, &down[n..], io));
    let m = m.unwrap();
    assert!(m > 0, "the window reopened");
    ex.take(0, acts);
    ex.settle();
    let other = cs.read(&mut legs[1], 1, &ex.take_out(1));
    assert!(other.is_empty(), "{other:?}");
    let got = cs.bytes();
    assert_eq!(Sha256::digest(&got), Sha256::digest(&down[..n + m]));
}

/// A Forget the queue to the home refused is owed (`ConfluxShard::resend_owed`); on a quiet
/// shard no later conflux message would carry it, so the core's periodic tick sends it and
/// the home's directory entry goes.
#[test]
fn a_refused_forget_is_sent_again_at_the_next_tick() {
    let seed = seed("a_refused_forget_is_sent_again_at_the_next_tick");
    let mut rng = StdRng::seed_from_u64(seed);
    // The set lives on shard 0 (its first leg's), its nonce's home is shard 1.
    let shards = [0, 1];
    let mut ex = Exit::new();
    let legs = linked(&mut ex, &mut rng, 1, shards);
    assert_eq!(ex.r[1].core.metrics().conflux_dir_entries, 1);
    ex.refuse_forgets = 1;
    for (l, cl) in legs.iter().enumerate() {
        let acts = ex.r[shards[l]].cell(&cl.chan, cl.circ_id, ChanCmd::DESTROY, [0u8; 509]);
        ex.take(shards[l], acts);
        ex.settle();
    }
    assert_eq!(ex.refuse_forgets, 0, "the owner sent a Forget");
    assert_eq!(ex.r[0].core.metrics().conflux_sets, 0);
    assert_eq!(ex.r[0].core.metrics().conflux_forgets_owed, 1);
    assert_eq!(
        ex.r[1].core.metrics().conflux_dir_entries,
        1,
        "the refused Forget's entry"
    );
    // Nothing else happens on either shard: the tick alone resends it.
    ex.advance(Duration::from_secs(1));
    let (_, acts) = ex.r[0].io(|c, io| c.tick(io));
    ex.take(0, acts);
    ex.settle();
    assert_eq!(ex.r[0].core.metrics().conflux_forgets_owed, 0);
    assert_eq!(
        ex.r[1].core.metrics().conflux_dir_entries,
        0,
        "the home kept the entry after the tick"
    );
}
