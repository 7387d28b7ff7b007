//! Backward cells of several circuits that cross shards (client channel on one shard, next
//! hop on the other) and arrive at their origin shard in one cross-shard drain give the same
//! bytes as when each arrives in a drain of its own: twin relays built from one seed get the
//! same random interleaving of backward DATA cells — with a DESTROY from the next hop mid-way
//! for one circuit — once in one burst (one drain) and once one cell per drain. Every client
//! must receive the same cells, byte for byte and in order (DESTROY after its circuit's
//! cells), and the DATA must open to what the next hop sent. The node crypts such cells one
//! at a time (the counters say so). Seeded; the seed is printed.

mod channel_support;
mod node_harness;

use fors::cell::chan::{Create2, Created2};
use fors::cell::relay::msg::Extended2;
use fors::cell::relay::{v0, RelayCmd};
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::crypto::handshake::ntor::server_handshake;
use fors::crypto::relay::{Tor1ClientLayer, Tor1RelayCrypto};
use fors::proto::circuit::{CellBody, HopCrypto};
use node_harness::*;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

/// Circuits crossing shards, all through one node → target channel.
const K: usize = 4;
/// Backward DATA cells per circuit.
const PER_CIRCUIT: usize = 10;

struct Crossing {
    p: Peer,
    c: ClientCirc,
    /// The circuit ID on the node → target channel, and the target's layer.
    tcid: CircId,
    hop: Tor1RelayCrypto,
}

/// The twin relays' common setup: `K` clients on the origin shard, each with a circuit
/// extended to the target relay, which the other shard owns.
fn setup(seed: u64) -> (Net, Vec<Crossing>, Peer, usize) {
    let mut net = Net::new(seed);
    let target = target_ident();
    let owner = owner_of(target);
    let origin = 1 - owner;
    let mut t: Option<Peer> = None;
    let mut out = Vec::new();
    for i in 0..K {
        let mut p = Peer::client(&mut net, origin, 41000 + i as u16);
        let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0020 + i as u32);
        let mut rng = StdRng::seed_from_u64(net.rng.next_u64());
        let (st, _, body) = extend2_to_target(&mut c, &mut rng);
        net.shards[owner].ops.clear();
        p.send(&mut net, c.circ_id, ChanCmd::RELAY_EARLY, &body);
        // The first extend opens the channel; the others use it.
        let cs = connects(&net.shards[owner]);
        match &mut t {
            None => {
                assert_eq!(cs.len(), 1, "{:?}", net.shards[owner].ops);
                net.nodes[owner].on_connected(cs[0].0, cs[0].1, &mut net.shards[owner]);
                net.settle();
                t = Some(Peer::target(&mut net, owner, cs[0].0));
            }
            Some(_) => assert!(cs.is_empty(), "one channel to the target"),
        }
        let t = t.as_mut().unwrap();
        t.pump(&mut net);
        let cells = t.cells();
        assert_eq!(cells.len(), 1, "{cells:?}");
        let (tcid, cmd, create2) = cells[0].clone();
        assert_eq!(cmd, ChanCmd::CREATE2);
        let cb: CellBody = create2.as_slice().try_into().unwrap();
        let parsed = Create2::parse(&cb).unwrap();
        let (reply, keys) =
            server_handshake(&mut rng, &target.onion, &target.id.rsa_id(), parsed.hdata).unwrap();
        let mut created = [0u8; CELL_BODY_LEN];
        Created2 { hdata: &reply }.encode(&mut created).unwrap();
        t.send(&mut net, tcid, ChanCmd::CREATED2, &created);
        p.pump(&mut net);
        let got = c.open_all(&p.cells());
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].0, got[0].1), (0, RelayCmd::EXTENDED2));
        let hk = st
            .finish(Extended2::parse(&got[0].3).unwrap().hdata)
            .expect("EXTENDED2 carries the target's reply");
        c.layers.push_hop(Tor1ClientLayer::new(&hk));
        out.push(Crossing {
            p,
            c,
            tcid,
            hop: Tor1RelayCrypto::from_keys(&keys),
        });
    }
    (net, out, t.unwrap(), origin)
}

/// One thing the next hop sends: (circuit, Some(DATA payload)) or (circuit, None) for DESTROY.
type Step = (usize, Option<Vec<u8>>);

/// What the next hop sends, and the circuit it destroys.
fn script(rng: &mut StdRng) -> (Vec<Step>, usize) {
    let mut left = [PER_CIRCUIT; K];
    let mut out = Vec::new();
    let destroyed = rng.gen_range(0..K);
    let destroy_after = rng.gen_range(1..PER_CIRCUIT);
    while left.iter().any(|&l| l > 0) {
        let live: Vec<usize> = (0..K).filter(|&i| left[i] > 0).collect();
        let i = live[rng.gen_range(0..live.len())];
        let sent = PER_CIRCUIT - left[i];
        if i == destroyed && sent == destroy_after {
            out.push((i, None));
            left[i] = 0; // the circuit is gone: nothing more for it
            continue;
        }
        // Runs of one to three cells of a circuit, as a next hop's writes come.
        let run = rng.gen_range(1..=3).min(left[i]);
        let run = if i == destroyed && sent < destroy_after {
            run.min(destroy_after - sent)
        } else {
            run
        };
        for _ in 0..run {
            left[i] -= 1;
            let len = rng.gen_range(1..=400);
            out.push((i, Some((0..len).map(|_| rng.gen()).collect())));
        }
    }
    (out, destroyed)
}

/// Cells the stage crypts in runs (consecutive cells of one circuit, two or more, within a
/// stretch the DESTROY does not split): what one drain must count as crypted batched.
fn cells_in_runs(steps: &[Step]) -> usize {
    let mut total = 0;
    let mut k = 0;
    while k < steps.len() {
        let Some(_) = steps[k].1 else {
            k += 1;
            continue;
        };
        let mut end = k + 1;
        while end < steps.len() && steps[end].0 == steps[k].0 && steps[end].1.is_some() {
            end += 1;
        }
        if end - k > 1 {
            total += end - k;
        }
        k = end;
    }
    total
}

/// Runs the script on a fresh relay; `burst`: every cell in one read of the target channel
/// (one cross-shard drain at the origin), else one cell per read. Returns what each client
/// received and the origin's (cross batches, cells crypted batched) deltas.
type Received = Vec<Vec<(CircId, ChanCmd, Vec<u8>)>>;

fn run(seed: u64, burst: bool) -> (Received, u64, u64, usize, usize) {
    let (mut net, mut xs, mut t, origin) = setup(seed);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let (steps, destroyed) = script(&mut rng);
    let before = net.nodes[origin].circuit_metrics().clone();
    net.cross_log.clear();
    for (i, what) in &steps {
        let x = &mut xs[*i];
        match what {
            Some(data) => {
                let mut b = [0u8; CELL_BODY_LEN];
                v0::encode_with(&mut b, RelayCmd::DATA, 7, &mut rng, |o| {
                    o[..data.len()].copy_from_slice(data);
                    Ok(data.len())
                })
                .unwrap();
                x.hop.originate(&mut b);
                t.chan.send_cell(x.tcid, ChanCmd::RELAY, &b).unwrap();
            }
            None => {
                let mut b = [0u8; CELL_BODY_LEN];
                b[0] = 0; // NONE: the next hop's circuit ended
                t.chan.send_cell(x.tcid, ChanCmd::DESTROY, &b).unwrap();
            }
        }
        if !burst {
            t.push(&mut net);
        }
    }
    t.push(&mut net);
    let m = net.nodes[origin].circuit_metrics().clone();
    let mut got = Vec::new();
    for (i, x) in xs.iter_mut().enumerate() {
        x.p.pump(&mut net);
        let cells = x.p.cells();
        // The DATA opens to what the target sent, in order; DESTROY comes last.
        let want: Vec<&Vec<u8>> = steps
            .iter()
            .filter(|(j, _)| *j == i)
            .filter_map(|(_, d)| d.as_ref())
            .collect();
        let opened = x.c.open_all(&cells);
        assert_eq!(opened.len(), want.len(), "circuit {i}");
        for (o, w) in opened.iter().zip(&want) {
            assert_eq!((o.0, o.1, o.2), (1, RelayCmd::DATA, 7), "circuit {i}");
            assert!(&o.3 == *w, "circuit {i}: DATA differs");
        }
        let destroys: Vec<usize> = cells
            .iter()
            .enumerate()
            .filter(|(_, c)| c.1 == ChanCmd::DESTROY)
            .map(|(k, _)| k)
            .collect();
        if i == destroyed {
            assert_eq!(destroys, vec![cells.len() - 1], "circuit {i}: DESTROY last");
        } else {
            assert!(destroys.is_empty(), "circuit {i}: {destroys:?}");
        }
        got.push(cells);
    }
    (
        got,
        m.relay_in_cross_batches - before.relay_in_cross_batches,
        m.cells_crypted_batched - before.cells_crypted_batched,
        steps.len(),
        cells_in_runs(&steps),
    )
}

#[test]
fn backward_cells_of_one_drain_match_one_cell_per_drain() {
    let s = seed("backward_cells_of_one_drain_match_one_cell_per_drain");
    let (one, one_batches, one_batched, n, in_runs) = run(s, false);
    let (burst, burst_batches, burst_batched, _, _) = run(s, true);
    eprintln!(
        "{n} cells ({in_runs} in runs of one circuit): one per drain: {one_batches} cross \
         stages, {one_batched} crypted batched; one drain: {burst_batches} cross stages, \
         {burst_batched} crypted batched"
    );
    assert_eq!(one, burst, "the clients receive the same cells either way");
    // The node crypts cells from other shards one at a time (`handle_next_hop_cell`): the
    // cross-shard stage (`queue_next_hop_cell`) measured slower for backward middle cells
    // (bench/RESULTS.md, "Cross-shard backward cells: staged or one at a time").
    assert_eq!((one_batches, one_batched), (0, 0));
    assert_eq!((burst_batches, burst_batched), (0, 0));
}
