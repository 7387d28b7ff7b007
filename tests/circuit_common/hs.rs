//! Onion-service helpers shared by the intro/rendezvous tests (`hs_circuit.rs`,
//! `hs_cross_shard.rs`, `hs_cgo_intro.rs`): seeds, peers, one-hop circuits with their KH,
//! the cells a service and a client send, and two shards of one relay whose `Action::Hs`
//! messages the test carries in order, as the node's cross-shard queues do.

use std::collections::VecDeque;

use ed25519_dalek::SigningKey;
use fors::cell::chan::{Create2, Created2, DestroyReason};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::circuit::hs_cross::HsMsg;
use fors::proto::circuit::{Action, ChanInfo, RelayIdentity, ShardIdx};
use fors::proto::hs::cells::{AckStatus, IntroduceAck};
use fors_testkit::circuit::PendingHandshake;

pub use super::hs_cells::*;
use super::{cells, destroy_reason, one_cell, test_config, Client, Handshake, Relay, TestNet};

/// A peer relay's identity, all bytes `tag`.
pub fn peer(tag: u8) -> RelayIdentity {
    RelayIdentity {
        rsa: fors::crypto::ids::RsaIdentity([tag; 20]),
        ed: fors::crypto::ids::Ed25519Identity([tag; 32]),
    }
}

/// Builds a one-hop circuit to `r` over `chan` (ntor, or ntor-v3 if `v3`) and returns the
/// client and the handshake's KH, which the test keeps to MAC an ESTABLISH_INTRO.
pub fn build(r: &mut Relay, chan: ChanInfo, id: u32, v3: bool) -> (Client, [u8; 20]) {
    let mut cl = Client::new(chan, 0x8000_0000 | id);
    let onion = *r.keys.current().public();
    let hs = if v3 {
        Handshake::NtorV3 {
            ed: r.id.ed,
            onion,
            exts: vec![],
        }
    } else {
        Handshake::Ntor {
            rsa: r.id.rsa,
            onion,
        }
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
pub fn relay_cell(cl: &mut Client, hop: usize, cmd: RelayCmd, data: &[u8]) -> [u8; CELL_BODY_LEN] {
    cl.circ
        .relay_cell_with(&mut cl.rng, hop, cmd, 0, |o| {
            o[..data.len()].copy_from_slice(data);
            Ok(data.len())
        })
        .unwrap()
        .0
}

/// Sends `cmd` with `data` to hop `hop` of `cl` through `r` as `chan_cmd`.
pub fn send(
    r: &mut Relay,
    cl: &mut Client,
    hop: usize,
    chan_cmd: ChanCmd,
    cmd: RelayCmd,
    data: &[u8],
) -> Vec<Action> {
    let body = relay_cell(cl, hop, cmd, data);
    r.cell(&cl.chan, cl.circ_id, chan_cmd, body)
}

/// The relay cells in `acts` for `cl`, decrypted: (hop, cmd, data).
pub fn got(cl: &mut Client, acts: &[Action]) -> Vec<(usize, RelayCmd, Vec<u8>)> {
    cl.open_all(acts)
        .into_iter()
        .map(|(hop, cmd, _, d)| (hop, cmd, d))
        .collect()
}

/// The DESTROY cells in `acts`: (channel, circuit ID, reason).
pub fn destroys(acts: &[Action]) -> Vec<(u64, CircId, DestroyReason)> {
    cells(acts)
        .into_iter()
        .filter(|c| c.2 == ChanCmd::DESTROY)
        .map(|(ch, id, _, b)| (ch.0, id, destroy_reason(&b)))
        .collect()
}

/// The status of the one INTRODUCE_ACK for `cl` in `acts`.
pub fn ack_status(cl: &mut Client, acts: &[Action]) -> AckStatus {
    let g = got(cl, acts);
    assert_eq!(g.len(), 1, "one INTRODUCE_ACK: {acts:?}");
    assert_eq!(g[0].1, RelayCmd::INTRODUCE_ACK);
    IntroduceAck::parse(&g[0].2).unwrap().status
}

/// Two shards of one relay and the messages in flight between them, in order.
pub struct Pair {
    pub r: Vec<Relay>,
    /// (to, msg) in push order (one FIFO per direction would keep the same order here: a
    /// test delivers everything before the next cell).
    pub flight: VecDeque<(usize, HsMsg)>,
    /// Cells each shard emitted, not yet looked at.
    pub out: [Vec<Action>; 2],
}

impl Pair {
    pub fn new() -> Pair {
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

    /// One shard alone (a one-shard relay: nothing is ever in flight).
    pub fn one_shard() -> Pair {
        Pair {
            r: vec![Relay::new(
                1,
                test_config(),
                "reject *:*",
                TestNet::default(),
            )],
            flight: VecDeque::new(),
            out: [Vec::new(), Vec::new()],
        }
    }

    /// Sorts shard `s`'s actions: messages go in flight, the rest to `out[s]`.
    pub fn take(&mut self, s: usize, acts: Vec<Action>) {
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
    pub fn deliver_one(&mut self) -> bool {
        let Some((to, msg)) = self.flight.pop_front() else {
            return false;
        };
        let (_, acts) = self.r[to].io(|c, io| c.handle_hs_msg(msg, io));
        self.take(to, acts);
        true
    }

    /// Delivers until nothing is in flight (bounded).
    pub fn settle(&mut self) {
        for _ in 0..10_000 {
            if !self.deliver_one() {
                return;
            }
        }
        panic!("messages never settled");
    }

    /// Everything each shard emitted since the last call.
    pub fn drain(&mut self) -> [Vec<Action>; 2] {
        [
            std::mem::take(&mut self.out[0]),
            std::mem::take(&mut self.out[1]),
        ]
    }

    /// A cell from `cl`'s channel into shard `s`, messages left in flight.
    pub fn cell_held(&mut self, s: usize, cl: &Client, cmd: ChanCmd, body: [u8; CELL_BODY_LEN]) {
        let acts = self.r[s].cell(&cl.chan, cl.circ_id, cmd, body);
        self.take(s, acts);
    }

    /// A cell from `cl`'s channel into shard `s`, then every message delivered.
    pub fn cell(&mut self, s: usize, cl: &Client, cmd: ChanCmd, body: [u8; CELL_BODY_LEN]) {
        self.cell_held(s, cl, cmd, body);
        self.settle();
    }

    /// A service's circuit on shard `s` over `chan`, made `sk`'s intro circuit (its
    /// ESTABLISH_INTRO sent and every message delivered; the answer left in `out[s]`).
    pub fn intro_circuit(&mut self, s: usize, chan: ChanInfo, id: u32, sk: &SigningKey) -> Client {
        let (mut svc, kh) = build(&mut self.r[s], chan, id, false);
        self.send(
            s,
            &mut svc,
            RelayCmd::ESTABLISH_INTRO,
            &establish_intro(sk, &kh),
        );
        svc
    }

    /// `cmd` with `data` from `cl` to its first hop on shard `s`, messages delivered.
    pub fn send(&mut self, s: usize, cl: &mut Client, cmd: RelayCmd, data: &[u8]) {
        let body = relay_cell(cl, 0, cmd, data);
        self.cell(s, cl, ChanCmd::RELAY, body);
    }
}
