//! Criterion benches of tor1 relay crypto per cell: AES-CTR per implementation, middle forward,
//! exit forward and exit originate, single circuit and across 8/16/64 circuits.

mod common;

use common::{circuits, Fill};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use fors::crypto::relay::aes_ctr::Aes128Ctr;
use fors::crypto::relay::cpu::CpuFeatures;
use fors::crypto::relay::{forward_multi_indexed, originate_multi_indexed, CELL_BODY_LEN};
use std::hint::black_box;

fn aes_ctr(c: &mut Criterion) {
    let mut g = c.benchmark_group("aes_ctr_cell");
    g.throughput(Throughput::Bytes(CELL_BODY_LEN as u64));
    let mut cell = [0u8; CELL_BODY_LEN];
    for imp in CpuFeatures::detect().aes_impls() {
        let mut ctr = Aes128Ctr::new(&[7u8; 16], imp);
        g.bench_function(format!("{imp:?}"), |b| {
            b.iter(|| ctr.apply_keystream(black_box(&mut cell)))
        });
    }
    g.finish();
}

fn middle_forward(c: &mut Criterion) {
    let mut fill = Fill::new(1);
    let mut g = c.benchmark_group("middle_forward");
    g.throughput(Throughput::Elements(1));
    let (mut relays, _) = circuits(&mut fill, 1);
    let mut cell = fill.cells(1)[0];
    g.bench_function("single", |b| {
        b.iter(|| black_box(relays[0].recognize(black_box(&mut cell))))
    });
    for n in [8usize, 16, 64] {
        let mut cells = fill.cells(n);
        let mut for_us = vec![false; n];
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("run_of_cells", n), &n, |b, _| {
            b.iter(|| black_box(relays[0].forward_batch(&mut cells, &mut for_us)))
        });
    }
    g.finish();
}

fn exit_originate(c: &mut Criterion) {
    let mut fill = Fill::new(2);
    let mut g = c.benchmark_group("exit_originate");
    g.throughput(Throughput::Elements(1));
    let (mut relays, _) = circuits(&mut fill, 1);
    let mut cell = fill.cells(1)[0];
    g.bench_function("single", |b| {
        b.iter(|| black_box(relays[0].originate(black_box(&mut cell))))
    });
    for n in [8usize, 16, 64] {
        let (mut relays, _) = circuits(&mut fill, n);
        let mut cells = fill.cells(n);
        let circ: Vec<usize> = (0..n).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("circuits", n), &n, |b, _| {
            b.iter(|| originate_multi_indexed(&mut relays, &mut cells, &circ, None))
        });
    }
    g.finish();
}

fn exit_forward(c: &mut Criterion) {
    let mut fill = Fill::new(3);
    let mut g = c.benchmark_group("exit_forward");
    // Genuine cells must arrive in order from a fresh state, so set-up (client side) is redone
    // outside the timed part for every batch.
    for n in [1usize, 8, 16, 64] {
        let (fresh, clients) = circuits(&mut fill, n);
        let plain = fill.cells(n);
        let circ: Vec<usize> = (0..n).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("circuits", n), &n, |b, _| {
            b.iter_batched(
                || {
                    let mut clients = clients.clone();
                    let mut cells = plain.clone();
                    for (cl, cell) in clients.iter_mut().zip(cells.iter_mut()) {
                        cell[1] = 0;
                        cell[2] = 0;
                        cl.originate(0, cell).expect("one hop");
                    }
                    (fresh.clone(), cells, vec![false; n])
                },
                |(mut relays, mut cells, mut for_us)| {
                    black_box(forward_multi_indexed(
                        &mut relays,
                        &mut cells,
                        &circ,
                        &mut for_us,
                    ))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    aes_ctr,
    middle_forward,
    exit_originate,
    exit_forward
);
criterion_main!(benches);
