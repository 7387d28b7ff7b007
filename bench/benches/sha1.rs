//! Criterion benches of the tor1 running digest per cell (absorb 509 bytes + finalize a copy):
//! SHA-NI one circuit at a time against multi-buffer AVX2 (8 lanes) and AVX-512 (16 lanes, and
//! the 8-lane AVX-512VL kernel used for small groups). The numbers behind
//! `Tor1Engine::choose`.

mod common;

use common::Fill;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fors::crypto::relay::cpu::{CpuFeatures, Sha1Impl, Sha1MultiImpl};
use fors::crypto::relay::sha1::Sha1State;
use fors::crypto::relay::sha1_mb::Sha1Lanes;
use std::hint::black_box;

fn sha1_cell(c: &mut Criterion) {
    let mut fill = Fill::new(9);
    let cells = fill.cells(16);
    let mut g = c.benchmark_group("sha1_cell");
    let mut lanes = Sha1Lanes::new();
    for imp in CpuFeatures::detect().sha1_multi_impls() {
        let widths: &[usize] = match imp {
            Sha1MultiImpl::OneByOne(_) => &[1],
            Sha1MultiImpl::Avx2x8 => &[8],
            Sha1MultiImpl::Avx512x16 => &[4, 8, 16],
        };
        for &w in widths {
            let mut states: Vec<Sha1State> = (0..w)
                .map(|i| {
                    let mut s = Sha1State::new();
                    s.update(&cells[i][..20 + i], Sha1Impl::Portable);
                    s
                })
                .collect();
            g.throughput(Throughput::Elements(w as u64));
            g.bench_with_input(BenchmarkId::new(format!("{imp:?}"), w), &w, |b, _| {
                b.iter(|| {
                    lanes.clear();
                    for (i, s) in states.iter().enumerate() {
                        lanes.push(s, &cells[i]);
                    }
                    lanes.run(imp);
                    for (i, s) in states.iter_mut().enumerate() {
                        lanes.commit(i, s);
                    }
                    black_box(lanes.digest(0))
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, sha1_cell);
criterion_main!(benches);
