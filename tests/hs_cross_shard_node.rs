//! The introduction and rendezvous point through two `RelayNode`s (shards 0 and 1 of one
//! relay) on fake shards: real channels, the node's cross-shard queues (`RelayMsg::Hs`),
//! fake clocks. The service's circuit is on one shard and the client's on the other; then
//! a spliced circuit meets a full cross-shard queue and is closed, both sides, with
//! RESOURCELIMIT (counted), never a lost or reordered cell.
//!
//! Seeds are printed; `FORS_TEST_SEED` replays one.

mod channel_support;
#[path = "circuit_common/hs_cells.rs"]
mod hs_cells;
mod node_harness;

use ed25519_dalek::SigningKey;
use fors::cell::chan::{Destroy, DestroyReason};
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CELL_BODY_LEN};
use fors::crypto::keymat::Tor1KeyMaterial;
use fors::crypto::relay::Tor1ClientLayer;
use fors::proto::hs::cells::Rendezvous1;
use fors::proto::hs::cells::{AckStatus, Introduce1, IntroduceAck};
use hs_cells::{establish_intro, intro1, key_with_home};
use node_harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn relay(p: &mut Peer, net: &mut Net, c: &mut ClientCirc, hop: usize, cmd: RelayCmd, data: &[u8]) {
    let body = c.cell(hop, cmd, 0, data);
    p.send(net, c.circ_id, ChanCmd::RELAY, &body);
}

fn destroys(cells: &[(fors::cell::CircId, ChanCmd, Vec<u8>)]) -> Vec<DestroyReason> {
    cells
        .iter()
        .filter(|c| c.1 == ChanCmd::DESTROY)
        .map(|c| {
            let b: [u8; CELL_BODY_LEN] = c.2.as_slice().try_into().unwrap();
            Destroy::parse(&b).unwrap().reason
        })
        .collect()
}

/// A service's intro circuit on shard 0 for a key whose home is shard 1, established.
fn intro_service(net: &mut Net, rng: &mut StdRng) -> (SigningKey, Peer, ClientCirc) {
    let sk = key_with_home(rng, 1);
    let mut sp = Peer::client(net, 0, 40001);
    let mut svc = ClientCirc::create(net, &mut sp, 0x8000_0001);
    let kh = svc.kh;
    relay(
        &mut sp,
        net,
        &mut svc,
        0,
        RelayCmd::ESTABLISH_INTRO,
        &establish_intro(&sk, &kh),
    );
    let got = svc.open_all(&sp.cells());
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, RelayCmd::INTRO_ESTABLISHED);
    (sk, sp, svc)
}

#[test]
fn introduce_across_nodes() {
    let seed = seed("introduce_across_nodes");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = Net::new(seed);
    let (sk, mut sp, mut svc) = intro_service(&mut net, &mut rng);
    assert!(net
        .cross_log
        .iter()
        .any(|&(f, t, k)| (f, t, k) == (0, 1, "Hs")));

    let mut cp = Peer::client(&mut net, 1, 40002);
    let mut cl = ClientCirc::create(&mut net, &mut cp, 0x8000_0002);
    let mut b = [0u8; 498];
    let enc: Vec<u8> = (0..280).map(|_| rng.gen()).collect();
    let n = Introduce1::encode(sk.verifying_key().as_bytes(), &[], &enc, &mut b).unwrap();
    relay(&mut cp, &mut net, &mut cl, 0, RelayCmd::INTRODUCE1, &b[..n]);
    sp.pump(&mut net);
    let to_svc = svc.open_all(&sp.cells());
    assert_eq!(to_svc.len(), 1, "{to_svc:?}");
    assert_eq!(
        (to_svc[0].1, &to_svc[0].3[..]),
        (RelayCmd::INTRODUCE2, &b[..n])
    );
    let to_cl = cl.open_all(&cp.cells());
    assert_eq!(to_cl.len(), 1, "{to_cl:?}");
    assert_eq!(to_cl[0].1, RelayCmd::INTRODUCE_ACK);
    assert_eq!(
        IntroduceAck::parse(&to_cl[0].3).unwrap().status,
        AckStatus::SUCCESS
    );
    assert_eq!(net.nodes[1].circuit_metrics().hs_cross_shard_intros, 1);
}

#[test]
fn splice_across_nodes_then_a_full_cross_queue() {
    let seed = seed("splice_across_nodes_then_a_full_cross_queue");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = Net::new(seed);
    // The client's circuit on shard 0, the service's on shard 1.
    let mut cp = Peer::client(&mut net, 0, 40001);
    let mut cl = ClientCirc::create(&mut net, &mut cp, 0x8000_0001);
    let mut sp = Peer::client(&mut net, 1, 40002);
    let mut svc = ClientCirc::create(&mut net, &mut sp, 0x8000_0002);
    let cookie: [u8; 20] = rng.gen();
    relay(
        &mut cp,
        &mut net,
        &mut cl,
        0,
        RelayCmd::ESTABLISH_RENDEZVOUS,
        &cookie,
    );
    assert_eq!(
        cl.open_all(&cp.cells())[0].1,
        RelayCmd::RENDEZVOUS_ESTABLISHED
    );
    let mut r1 = [0u8; 498];
    let n = Rendezvous1::encode(&cookie, &[0x42; 64], &mut r1).unwrap();
    relay(
        &mut sp,
        &mut net,
        &mut svc,
        0,
        RelayCmd::RENDEZVOUS1,
        &r1[..n],
    );
    cp.pump(&mut net);
    let g = cl.open_all(&cp.cells());
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(
        (g[0].1, &g[0].3[..]),
        (RelayCmd::RENDEZVOUS2, &[0x42; 64][..])
    );
    let joins: u64 = (0..2)
        .map(|s| net.nodes[s].circuit_metrics().hs_cross_shard_joins)
        .sum();
    assert_eq!(joins, 1);

    // The end-to-end hop the relay cannot read.
    let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
    rng.fill(&mut k[..]);
    let e2e = Tor1KeyMaterial::from_kdf_output(&k);
    let mut rev = e2e.clone();
    (rev.df, rev.db, rev.kf, rev.kb) = (e2e.db, e2e.df, e2e.kb, e2e.kf);
    cl.layers.push_hop(Tor1ClientLayer::new(&e2e));
    svc.layers.push_hop(Tor1ClientLayer::new(&rev));

    // Both ways, a few cells each, through the nodes' queues.
    for (i, dir) in [true, false, true, false].into_iter().enumerate() {
        let (fp, fc, tp, tc) = if dir {
            (&mut cp, &mut cl, &mut sp, &mut svc)
        } else {
            (&mut sp, &mut svc, &mut cp, &mut cl)
        };
        let data: Vec<u8> = (0..100 + i).map(|_| rng.gen()).collect();
        relay(fp, &mut net, fc, 1, RelayCmd::DATA, &data);
        tp.pump(&mut net);
        let g = tc.open_all(&tp.cells());
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!((g[0].0, g[0].1, &g[0].3), (1, RelayCmd::DATA, &data));
    }

    // Shard 0's queue toward shard 1 takes 2 messages and nobody drains it: the client's
    // cells wait in the link's overflow, charged to the pool, until the pool is spent;
    // the next one closes the splice with RESOURCELIMIT, both sides.
    net.shards[0].cross_capacity = 2;
    let total = 1500usize;
    let mut sent = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..total {
        let data = (i as u32).to_be_bytes();
        let body = cl.cell(1, RelayCmd::DATA, 0, &data);
        if cp
            .chan
            .send_cell(cl.circ_id, ChanCmd::RELAY, &body)
            .is_err()
        {
            // The peer's output buffer is bounded: move it aside and retry once.
            let out = cp.chan.pending_output().to_vec();
            cp.chan.consume_output(out.len());
            bytes.extend_from_slice(&out);
            cp.chan
                .send_cell(cl.circ_id, ChanCmd::RELAY, &body)
                .unwrap();
        }
        sent.push(data);
    }
    let out = cp.chan.pending_output().to_vec();
    cp.chan.consume_output(out.len());
    bytes.extend_from_slice(&out);
    net.nodes[0].on_data(cp.conn, &mut bytes, &mut net.shards[0]);
    assert_eq!(
        net.nodes[0]
            .circuit_metrics()
            .hs_cross_shard_splice_overflow,
        1
    );
    assert!(net.nodes[0].census().cross_held > 0);
    // The client's channel stopped being read while the link was congested.
    assert!(net.shards[0].conns[&cp.conn].read_paused);
    // Now the queue drains: what was queued arrives in order, then the close.
    net.shards[0].cross_capacity = 1 << 16;
    net.settle();
    cp.pump(&mut net);
    sp.pump(&mut net);
    assert_eq!(destroys(&cp.cells()), vec![DestroyReason::ResourceLimit]);
    assert!(
        !net.shards[0].conns[&cp.conn].read_paused,
        "read again once drained"
    );
    let cells = sp.cells();
    assert_eq!(destroys(&cells), vec![DestroyReason::ResourceLimit]);
    let got: Vec<Vec<u8>> = svc
        .open_all(&cells)
        .into_iter()
        .map(|(_, _, _, d)| d)
        .collect();
    assert!(!got.is_empty() && got.len() < total, "{}", got.len());
    for (i, d) in got.iter().enumerate() {
        assert_eq!(
            d[..],
            sent[i][..],
            "cell {i} in order, none lost before the close"
        );
    }
    for s in 0..2 {
        let c = net.nodes[s].census();
        assert_eq!(
            (c.circuits, c.cross_held, c.queued_cells),
            (0, 0, 0),
            "shard {s}"
        );
    }
}

/// INTRODUCE1 bodies that wait in a congested cross-shard link are charged to the shard's
/// cell pool like held relay cells (the memory cap sees them) and counted in the link's
/// bound; once it drains, each reaches the service and each client hears SUCCESS.
#[test]
fn introduce_bodies_held_across_shards_are_charged() {
    let seed = seed("introduce_bodies_held_across_shards_are_charged");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut net = Net::new(seed);
    // The key's home on shard 1 (the clients' shard): INTRODUCE2 crosses to shard 0.
    let (sk, mut sp, mut svc) = intro_service(&mut net, &mut rng);
    let mut cp = Peer::client(&mut net, 1, 40002);
    let n = 6u32;
    let mut clients: Vec<ClientCirc> = (0..n)
        .map(|i| ClientCirc::create(&mut net, &mut cp, 0x8000_0010 + i))
        .collect();
    let base = net.nodes[1].census();
    // Shard 1's queue toward shard 0 takes 2 messages; nobody drains it for now.
    net.shards[1].cross_capacity = 2;
    let mut bytes = Vec::new();
    let mut sent = Vec::new();
    for c in clients.iter_mut() {
        let enc: Vec<u8> = (0..200).map(|_| rng.gen()).collect();
        let b = intro1(&sk, &enc);
        let body = c.cell(0, RelayCmd::INTRODUCE1, 0, &b);
        cp.chan.send_cell(c.circ_id, ChanCmd::RELAY, &body).unwrap();
        let out = cp.chan.pending_output().to_vec();
        cp.chan.consume_output(out.len());
        bytes.extend_from_slice(&out);
        sent.push(b);
    }
    net.nodes[1].on_data(cp.conn, &mut bytes, &mut net.shards[1]);
    let held = net.nodes[1].census();
    assert_eq!(held.cross_held, base.cross_held + n as usize - 2);
    assert_eq!(held.queued_cells, base.queued_cells + u64::from(n) - 2);
    assert_eq!(net.nodes[1].hs_cross_counters().overflow_introduce, 0);
    // Drained: every INTRODUCE2 reaches the service in order, every client hears SUCCESS.
    net.shards[1].cross_capacity = 1 << 16;
    net.settle();
    sp.pump(&mut net);
    cp.pump(&mut net);
    let to_svc: Vec<Vec<u8>> = svc
        .open_all(&sp.cells())
        .into_iter()
        .map(|(_, cmd, _, d)| {
            assert_eq!(cmd, RelayCmd::INTRODUCE2);
            d
        })
        .collect();
    assert_eq!(to_svc, sent);
    let cells = cp.cells();
    for c in clients.iter_mut() {
        let g = c.open_all(&cells);
        assert_eq!(g.len(), 1, "{g:?}");
        assert_eq!(
            IntroduceAck::parse(&g[0].3).unwrap().status,
            AckStatus::SUCCESS
        );
    }
    let after = net.nodes[1].census();
    assert_eq!(
        (after.cross_held, after.queued_cells),
        (base.cross_held, base.queued_cells)
    );
}
