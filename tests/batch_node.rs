//! The node hands the circuit core all RELAY cells of one read as one batch: cells of
//! several circuits sent in one burst (one `on_data`) reach their exit streams in order and
//! intact, and the core's counters show they were crypted together (this fails if the
//! channel goes back to one cell at a time). Seeded; the seed is printed.

mod channel_support;
mod node_harness;

use fors::cell::relay::RelayCmd;
use fors::cell::ChanCmd;
use fors::crypto::relay::cpu::{Sha1MultiImpl, Tor1Engine};
use node_harness::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[test]
fn one_read_of_many_circuits_is_crypted_together() {
    const K: usize = 4;
    const PER_CIRCUIT: usize = 30;
    let s = seed("one_read_of_many_circuits_is_crypted_together");
    let mut rng = StdRng::seed_from_u64(s);
    let mut net = Net::new(s);
    let mut p = Peer::client(&mut net, 0, 40000);
    let mut circs = vec![];
    let mut streams = vec![];
    for i in 0..K {
        let mut c = ClientCirc::create(&mut net, &mut p, 0x8000_0001 + i as u32);
        streams.push(open_stream(&mut net, &mut p, &mut c, 1));
        circs.push(c);
    }
    let before = net.nodes[0].circuit_metrics().clone();

    // One burst: every cell queued on the client's channel, then one delivery.
    let mut left = [PER_CIRCUIT; K];
    let mut expected: Vec<Vec<u8>> = vec![vec![]; K];
    for _ in 0..K * PER_CIRCUIT {
        let live: Vec<usize> = (0..K).filter(|&i| left[i] > 0).collect();
        let i = live[rng.gen_range(0..live.len())];
        left[i] -= 1;
        let len = rng.gen_range(1..=400);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let cell = circs[i].cell(0, RelayCmd::DATA, 1, &data);
        expected[i].extend_from_slice(&data);
        p.chan
            .send_cell(circs[i].circ_id, ChanCmd::RELAY, &cell)
            .unwrap();
    }
    p.pump(&mut net);

    for i in 0..K {
        let got = net.shards[0].take_output(streams[i]);
        assert!(
            got == expected[i],
            "circuit {i}: stream bytes differ ({} vs {})",
            got.len(),
            expected[i].len()
        );
    }
    let m = net.nodes[0].circuit_metrics();
    let (batches, cells) = (
        m.relay_in_batches - before.relay_in_batches,
        m.relay_in_cells - before.relay_in_cells,
    );
    let batched = m.cells_crypted_batched - before.cells_crypted_batched;
    eprintln!(
        "{cells} cells in {batches} batches, {batched} crypted batched, {} multi-circuit calls",
        m.relay_in_multi_calls - before.relay_in_multi_calls
    );
    assert_eq!(cells as usize, K * PER_CIRCUIT);
    // 120 cells: at most a few reads (the stage holds 64), not one per cell.
    assert!(batches <= 4, "{batches} batches for {cells} cells");
    assert!(
        batched * 10 >= cells * 9,
        "{batched} of {cells} crypted batched"
    );
    if !matches!(Tor1Engine::get().sha1_multi, Sha1MultiImpl::OneByOne(_)) {
        assert!(m.relay_in_multi_calls > before.relay_in_multi_calls);
    }
}
