//! Conflux legs on two shards of one relay through two `RelayNode`s on fake shards: real
//! channels, ntor-v3 circuits with congestion control, the node's bounded cross-shard
//! queues (`RelayMsg::Cfx`) and a fake exit socket (prop 329; C tor `conflux_pool.c`).
//! Leg a is on shard 0, leg b on shard 1, for a nonce homed on either shard: the set links
//! (LINKED on both), the client's upload over both legs with SWITCHes reaches the exit
//! socket in order, and the exit's download goes out on the lower-RTT remote leg through
//! the other shard; both SHA-256 checked. Then shard 0's leg is destroyed: the stream
//! stays (anchored on shard 0) and carries data both ways over leg b until b goes too.
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod channel_support;
mod node_harness;

use std::time::Duration;

use fors::cell::relay::msg::RelayMsg;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::CircuitExtension;
use fors::proto::circuit::CircuitConfig;
use fors::proto::conflux::{home_shard, DesiredUx, Link, Nonce, Switch};
use fors_testkit::circuit::{ClientCircuit, Handshake};
use node_harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// One leg: its channel and its circuit as the client sees it.
struct Leg {
    p: Peer,
    c: ClientCircuit,
    rng: StdRng,
}

impl Leg {
    /// A CC circuit (ntor-v3 with the congestion-control request) to shard `shard`.
    fn new(net: &mut Net, shard: usize, port: u16, circ_id: u32) -> Leg {
        let mut p = Peer::client(net, shard, port);
        let mut rng = StdRng::seed_from_u64(net.rng.gen());
        let node = node_ident();
        let mut c = ClientCircuit::new(CircId(circ_id));
        let hs = Handshake::NtorV3 {
            ed: node.id.ed_id(),
            onion: *node.onion.current().public(),
            exts: vec![CircuitExtension::CcRequest],
        };
        let (cmd, body) = c.create(&mut rng, &hs).unwrap();
        p.send(net, CircId(circ_id), cmd, &body);
        let cells = p.cells();
        assert_eq!(cells.len(), 1, "one CREATED2: {cells:?}");
        let exts = c.created(cells[0].1, &cells[0].2).unwrap();
        assert!(
            exts.iter()
                .any(|e| matches!(e, CircuitExtension::CcResponse { .. })),
            "the node negotiates congestion control: {exts:?}"
        );
        Leg { p, c, rng }
    }

    fn send(&mut self, net: &mut Net, msg: &RelayMsg<'_>, sid: u16) {
        let (body, _) = self.c.relay_cell(&mut self.rng, 0, msg, sid).unwrap();
        self.p.send(net, self.c.id, ChanCmd::RELAY, &body);
    }

    /// Reads what reached this leg: (cmd, data) of each relay cell.
    fn read(&mut self, net: &mut Net) -> Vec<(RelayCmd, Vec<u8>)> {
        self.p.pump(net);
        let id = self.c.id;
        self.p
            .cells()
            .into_iter()
            .filter(|(cid, cmd, _)| *cid == id && *cmd == ChanCmd::RELAY)
            .map(|(_, _, b)| {
                let mut b: [u8; CELL_BODY_LEN] = b.as_slice().try_into().unwrap();
                let r = self.c.open(&mut b).expect("our hop's cell");
                (r.cmd, r.data.to_vec())
            })
            .collect()
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

#[test]
fn legs_on_two_nodes_link_and_carry_a_stream_both_ways() {
    let seed = seed("legs_on_two_nodes_link_and_carry_a_stream_both_ways");
    let mut rng = StdRng::seed_from_u64(seed);
    for home in 0..2 {
        let mut net = Net::new(rng.gen());
        let mut legs = [
            Leg::new(&mut net, 0, 40001, 0x8000_0001),
            Leg::new(&mut net, 1, 40002, 0x8000_0002),
        ];
        let nonce = loop {
            let n: Nonce = rng.gen();
            if home_shard(&n, 2, &CircuitConfig::for_tests().home_key) == home {
                break n;
            }
        };
        // LINK on a (shard 0) first: shard 0 owns the set. Then on b (shard 1).
        for l in &mut legs {
            l.send(
                &mut net,
                &other(RelayCmd::CONFLUX_LINK, &link_body(nonce)),
                0,
            );
            net.settle();
            let got = l.read(&mut net);
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].0, RelayCmd::CONFLUX_LINKED);
            assert_eq!(Link::parse(&got[0].1).unwrap().nonce, nonce);
        }
        // b's LINKED_ACK after 5 ms, a's after 40 ms: b has the lower RTT.
        net.tick(Duration::from_millis(5));
        legs[1].send(&mut net, &other(RelayCmd::CONFLUX_LINKED_ACK, &[]), 0);
        net.tick(Duration::from_millis(35));
        legs[0].send(&mut net, &other(RelayCmd::CONFLUX_LINKED_ACK, &[]), 0);
        net.settle();
        let m0 = net.nodes[0].circuit_metrics();
        assert_eq!(
            (m0.conflux_sets, m0.conflux_legs),
            (1, 2),
            "the set on shard 0"
        );
        assert_eq!(m0.conflux_remote_legs_total, 1, "b is a remote leg");
        let m1 = net.nodes[1].circuit_metrics();
        assert_eq!((m1.conflux_sets, m1.conflux_legs), (0, 0));
        assert!(net
            .cross_log
            .iter()
            .any(|&(f, t, k)| (f, t, k) == (1, 0, "Cfx")));

        // Client's sequence numbers: one counter for the set, one per leg (prop 329).
        let mut sent = 0u64;
        let mut leg_sent = [0u64; 2];
        let mut send = |legs: &mut [Leg; 2], net: &mut Net, l: usize, msg: &RelayMsg<'_>| {
            if leg_sent[l] != sent {
                let mut b = [0u8; 4];
                Switch {
                    relative_seq: (sent - leg_sent[l]) as u32,
                }
                .encode(&mut b)
                .unwrap();
                legs[l].send(net, &other(RelayCmd::CONFLUX_SWITCH, &b), 0);
            }
            legs[l].send(net, msg, 7);
            sent += 1;
            leg_sent[l] = sent;
        };

        // BEGIN on a: the exit connects on shard 0 (the set's shard).
        net.shards[0].ops.clear();
        let begin = begin_data("127.0.0.1:8080");
        send(&mut legs, &mut net, 0, &other(RelayCmd::BEGIN, &begin));
        let cs = connects(&net.shards[0]);
        assert_eq!(cs.len(), 1, "{:?}", net.shards[0].ops);
        let exit = cs[0].0;
        net.nodes[0].on_connected(exit, cs[0].1, &mut net.shards[0]);
        net.settle();
        // CONNECTED goes on b, the lower-RTT leg, through shard 1.
        let got = legs[1].read(&mut net);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, RelayCmd::CONNECTED);
        assert!(legs[0].read(&mut net).is_empty());

        // Upload: 60 cells over both legs in random runs.
        let up: Vec<u8> = (0..60 * 400).map(|_| rng.gen()).collect();
        let mut l = 0;
        for chunk in up.chunks(400) {
            if rng.gen_ratio(1, 3) {
                l = 1 - l;
            }
            send(&mut legs, &mut net, l, &RelayMsg::Data(chunk));
        }
        net.settle();
        let written = net.shards[0].take_output(exit);
        assert_eq!(written.len(), up.len());
        assert_eq!(Sha256::digest(&written), Sha256::digest(&up), "upload");
        for l in &mut legs {
            // Only the legs' own circuit SENDMEs come back.
            assert!(l.read(&mut net).iter().all(|(c, _)| *c == RelayCmd::SENDME));
        }

        // Download: 40 cells from the exit socket, on b through shard 1.
        let mut down: Vec<u8> = (0..40 * 498).map(|_| rng.gen()).collect();
        net.nodes[0].on_data(exit, &mut down, &mut net.shards[0]);
        net.settle();
        let mut got = Vec::new();
        for (i, l) in legs.iter_mut().enumerate() {
            for (cmd, data) in l.read(&mut net) {
                assert_eq!((i, cmd), (1, RelayCmd::DATA), "DATA on b only");
                got.extend(data);
            }
        }
        assert_eq!(got.len(), down.len());
        assert_eq!(Sha256::digest(&got), Sha256::digest(&down), "download");
        let m0 = net.nodes[0].circuit_metrics();
        assert_eq!(m0.conflux_cross_full_teardowns, 0);
        assert_eq!((m0.conflux_sets, m0.conflux_legs), (1, 2));

        // One more cell on b, so b carries the newest cells both ways; then a, shard 0's
        // only leg, is destroyed. C tor keeps the set and its stream (`cfx_del_leg`): so
        // does the node, the stream anchored on shard 0 and its exit socket open.
        let tail: Vec<u8> = (0..400).map(|_| rng.gen()).collect();
        send(&mut legs, &mut net, 1, &RelayMsg::Data(&tail));
        net.settle();
        let mut up_all = up.clone();
        up_all.extend_from_slice(&tail);
        let mut written_all = written;
        written_all.extend(net.shards[0].take_output(exit));
        let destroy = [0u8; CELL_BODY_LEN];
        let id = legs[0].c.id;
        legs[0].p.send(&mut net, id, ChanCmd::DESTROY, &destroy);
        net.settle();
        assert!(
            net.is_open(0, exit),
            "the stream outlives shard 0's last leg"
        );
        let m0 = net.nodes[0].circuit_metrics();
        assert_eq!(
            (m0.conflux_sets, m0.conflux_legs, m0.conflux_anchors),
            (1, 1, 1)
        );
        // Upload and download keep going over b, through the cross-shard queues.
        let more: Vec<u8> = (0..30 * 400).map(|_| rng.gen()).collect();
        for chunk in more.chunks(400) {
            send(&mut legs, &mut net, 1, &RelayMsg::Data(chunk));
        }
        net.settle();
        up_all.extend_from_slice(&more);
        written_all.extend(net.shards[0].take_output(exit));
        assert_eq!(
            Sha256::digest(&written_all),
            Sha256::digest(&up_all),
            "upload after the anchor"
        );
        let mut down2: Vec<u8> = (0..30 * 498).map(|_| rng.gen()).collect();
        net.nodes[0].on_data(exit, &mut down2, &mut net.shards[0]);
        net.settle();
        let mut got = Vec::new();
        for (cmd, data) in legs[1].read(&mut net) {
            if cmd == RelayCmd::DATA {
                got.extend(data);
            } else {
                assert_eq!(cmd, RelayCmd::SENDME, "only DATA and b's circuit SENDMEs");
            }
        }
        assert_eq!(
            Sha256::digest(&got),
            Sha256::digest(&down2),
            "download after the anchor"
        );
        // b, the set's last leg, is destroyed: the set ends and the exit socket closes.
        let id = legs[1].c.id;
        legs[1].p.send(&mut net, id, ChanCmd::DESTROY, &destroy);
        net.settle();
        assert!(!net.is_open(0, exit), "the stream ended with the set");
        for n in &net.nodes {
            let m = n.circuit_metrics();
            assert_eq!(
                (
                    m.conflux_sets,
                    m.conflux_legs,
                    m.conflux_anchors,
                    m.circuits
                ),
                (0, 0, 0, 0)
            );
        }
    }
}
