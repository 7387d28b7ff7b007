//! The node's per-cell cost on the middle path, end to end inside the node: TLS in, relay
//! crypto, TLS out, into the (fake) shard's send buffer — what the copy map
//! (`docs/architecture.md`) is about. A middle circuit whose two channels live on one shard
//! (`tests/copies_support`), fed reads of `CELLS` cells; only the node's work is timed (the
//! peers' TLS and layers are prepared outside).
//!
//! ```text
//! cargo bench --bench node_cells                    # ns/cell, fastest and median of the runs
//! cargo bench --bench node_cells -- one ROUNDS      # ROUNDS reads forward, for callgrind:
//! valgrind --tool=callgrind --toggle-collect='*node_work*' \
//!     target/release/deps/node_cells-HASH one 200
//! ```
//!
//! Seeded (`FORS_TEST_SEED`); the seed is printed.

#[path = "../tests/channel_support/mod.rs"]
mod channel_support;
#[path = "../tests/copies_support/mod.rs"]
mod copies_support;
#[path = "../tests/node_harness/mod.rs"]
mod node_harness;

use std::time::Instant;

use copies_support::Middle;

/// Cells per read: what one 16 KiB receive buffer carries (31 cells of 514 bytes).
const CELLS: usize = 31;
/// Reads per timed run, and runs.
const READS: usize = 64;
const RUNS: usize = 31;

/// The node's work on one read (kept out of line so callgrind can count just this).
#[inline(never)]
fn node_work(m: &mut Middle, forward: bool, bytes: &mut [u8]) {
    m.deliver(forward, bytes);
}

/// Forgets what the node sent (the bench does not read it back), keeping the buffer.
fn drain(m: &mut Middle, forward: bool) {
    let conn = if forward { m.t.conn } else { m.p.conn };
    let s = &mut m.net.shards[m.shard];
    s.ops.clear();
    if let Some(c) = s.conns.get_mut(&conn) {
        c.pending.clear();
    }
}

fn run(m: &mut Middle, forward: bool) -> Vec<f64> {
    let mut per_cell = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let mut inputs: Vec<Vec<u8>> = (0..READS)
            .map(|_| {
                if forward {
                    m.prepare_forward(CELLS)
                } else {
                    m.prepare_backward(CELLS)
                }
            })
            .collect();
        let mut ns = 0u128;
        for bytes in &mut inputs {
            let t = Instant::now();
            node_work(m, forward, bytes);
            ns += t.elapsed().as_nanos();
            drain(m, forward);
        }
        per_cell.push(ns as f64 / (READS * CELLS) as f64);
    }
    per_cell.sort_by(f64::total_cmp);
    per_cell
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed = fors_testkit::test_seed("node_cells");
    let mut m = Middle::new(seed);
    if args.first().map(String::as_str) == Some("one") {
        let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(200);
        let mut inputs: Vec<Vec<u8>> = (0..rounds).map(|_| m.prepare_forward(CELLS)).collect();
        for bytes in &mut inputs {
            node_work(&mut m, true, bytes);
            drain(&mut m, true);
        }
        println!("{} cells forward", rounds * CELLS);
        return;
    }
    // A warm-up run of each direction, not reported.
    run(&mut m, true);
    run(&mut m, false);
    for (name, forward) in [("middle forward", true), ("middle backward", false)] {
        let v = run(&mut m, forward);
        println!(
            "{name}: {CELLS} cells per read: ns/cell fastest {:.1}, median {:.1} ({RUNS} runs of {READS} reads)",
            v[0],
            v[v.len() / 2]
        );
    }
}
