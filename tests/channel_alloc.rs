//! Allocation behaviour of the open-channel cell path, measured with a counting global
//! allocator: cells are queued in batches, encrypted, decrypted and delivered to a sink. Both
//! channels negotiate TLS 1.3 and run on Fors's record layer after the link handshake, which
//! seals and opens records in the channels' own buffers: nothing is allocated in steady
//! state, per cell or per record (rustls's buffered API allocated per record, 0.156 per
//! cell in this test).

mod channel_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use channel_support::*;
use fors::cell::{ChanCmd, CircId};
use fors::proto::channel::{CellQueue, ChannelEvent, ChannelSink, TlsPath};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc`; the new size comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Counts cells without storing them (a storing sink would allocate).
#[derive(Default)]
struct CountSink {
    cells: u64,
    last: u32,
}

impl ChannelSink for CountSink {
    fn cell(&mut self, _: CircId, _: ChanCmd, body: &mut [u8; 509], _: &mut CellQueue) {
        self.cells += 1;
        self.last = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    }
    fn event(&mut self, _: ChannelEvent) {}
}

#[test]
fn cell_path_allocates_nothing_per_cell_or_record() {
    let (mut init, _, mut resp, _) = open_pair(relay_a(), relay_b());
    assert_eq!(init.stats().tls_path, TlsPath::RecordLayer);
    assert_eq!(resp.stats().tls_path, TlsPath::RecordLayer);
    let mut rng = rand::thread_rng();
    let mut sink = CountSink::default();
    // One reusable transport buffer, as the shard would have.
    let mut wire = Vec::with_capacity(1 << 20);
    let batches = 200u32;
    let per_batch = 64u32;
    let mut run = || -> (u64, u64) {
        let before_allocs = ALLOCS.load(Ordering::Relaxed);
        let before_cells = sink.cells;
        for b in 0..batches {
            for i in 0..per_batch {
                let mut body = [0u8; 509];
                body[..4].copy_from_slice(&(b * per_batch + i).to_be_bytes());
                init.send_cell(CircId(0x8000_0001), ChanCmd::RELAY, &body)
                    .unwrap();
            }
            wire.clear();
            init.write_output(&mut wire);
            resp.handle_input(&wire, now(), &mut rng, &mut sink)
                .unwrap();
        }
        (
            ALLOCS.load(Ordering::Relaxed) - before_allocs,
            sink.cells - before_cells,
        )
    };
    run(); // warm-up: buffers reach their steady-state sizes
    let (allocs, cells) = run();
    assert_eq!(cells, u64::from(batches * per_batch));
    assert_eq!(sink.last, batches * per_batch - 1);
    let per_cell = allocs as f64 / cells as f64;
    println!("{allocs} allocations for {cells} cells: {per_cell:.3} per cell");
    // 64 cells = 32896 bytes = 3 TLS records per batch, none allocated for.
    assert_eq!(allocs, 0, "{per_cell} allocations per cell");
}
