//! Copies and heap allocations per cell on the node's data path, in steady state, checked
//! against the copy map (`docs/architecture.md`, "Copy map"): a middle circuit both ways and
//! an exit stream both ways, on fake shards, in rounds of `CELLS` cells after a warm-up.
//!
//! * Copies: `fors::util::copies` counts the bytes copied at each site of the map on this
//!   thread. A site's copies per cell is its bytes over the bytes of the cells that passed
//!   (TLS and send-pool sites carry 514-byte cells plus record headers, so a rounding to the
//!   nearest whole copy is taken); every site must match the map exactly, so an added copy
//!   fails the test, and a site the map lists as absent may show at most 0.1 per cell (so
//!   a copy of every third cell cannot round to none).
//! * Allocations: a counting global allocator (per thread) around the node's own work. The
//!   peers negotiate TLS 1.3, so after the link handshake both channels run on Fors's own
//!   record layer (`proto::tls_record`), which opens and seals records in the channel's
//!   buffers: nothing may be allocated at all in steady state, per cell or per record
//!   (rustls's buffered API allocated a buffer per record each way, and a receive-buffer
//!   resize per 4 KiB `read_tls`). `TRACE_ALLOC=1` prints where each allocation came from.
//!
//! The peers' work (client layers, their TLS) is done outside the counted windows. Seeded;
//! the seed is printed (`FORS_TEST_SEED` replays one).

mod channel_support;
mod copies_support;
mod node_harness;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use copies_support::*;
use fors::proto::channel::TlsPath;
use fors::util::copies::{self, CopySite, ALL, SITES};
use node_harness::seed;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

thread_local! {
    /// `TRACE_ALLOC=1`: print a backtrace for every allocation in a counted window.
    static TRACE: Cell<bool> = const { Cell::new(false) };
}

fn count_alloc() {
    // `try_with`: a thread being torn down has no counter (and is never measured).
    let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
    // Capturing and printing allocate too: the flag is off meanwhile.
    if TRACE.with(|t| t.replace(false)) {
        let bt = std::backtrace::Backtrace::force_capture();
        eprintln!("ALLOC {bt}");
        TRACE.with(|t| t.set(true));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_alloc();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_alloc();
        // SAFETY: as for `dealloc`; the new size comes from the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Cells per round: one full relay stage (`MAX_RELAY_IN`) per read.
const CELLS: usize = 64;
const WARMUP_ROUNDS: usize = 2;
const ROUNDS: usize = 3;

/// What one counted window saw.
#[derive(Default)]
struct Window {
    bytes: [u64; SITES],
    allocs: u64,
}

fn counted(f: impl FnOnce()) -> Window {
    let b0 = copies::snapshot();
    let a0 = ALLOCS.with(Cell::get);
    TRACE.with(|t| t.set(std::env::var("TRACE_ALLOC").is_ok()));
    f();
    TRACE.with(|t| t.set(false));
    let a1 = ALLOCS.with(Cell::get);
    let b1 = copies::snapshot();
    let mut w = Window {
        allocs: a1 - a0,
        ..Window::default()
    };
    for i in 0..SITES {
        w.bytes[i] = b1[i] - b0[i];
    }
    w
}

/// The copy map's rows: (site, copies per cell).
type Map = &'static [(CopySite, u64)];

/// Middle, either direction, on TLS 1.3 channels (Fors's record layer), each read carrying
/// whole records: the records are opened where they lie in the shard's receive buffer, the
/// cell goes from the plaintext into the read's stage (`RelayStage`), straight into the next
/// channel's queue (no `Action`), and from the queue into the send pool where it is sealed
/// (`RecordSeal`; no `SendPool` copy). A cell that spans two records is assembled in the
/// channel's receive buffer (`ChanInbuf`, about one in 32: rounds to 0).
const MIDDLE: Map = &[
    (CopySite::RelayStage, 1),
    (CopySite::ChanQueue, 1),
    (CopySite::RecordSeal, 1),
];

/// Middle, forward, the same bytes cut into 16 KiB reads that ignore the node's read caps:
/// the peer's full records (2^14 bytes of plaintext, 16406 on the wire) never fit one
/// read, so nearly every record is gathered in the channel's record buffer first
/// (`RecordInbuf`). The shard's buffers are 64 bytes larger and honour the caps (above).
const MIDDLE_16K_READS: Map = &[
    (CopySite::RecordInbuf, 1),
    (CopySite::RelayStage, 1),
    (CopySite::ChanQueue, 1),
    (CopySite::RecordSeal, 1),
];

/// Middle, either direction, on TLS 1.2 links (the client and the target offer only 1.2,
/// as C tor still accepts it): both channels stay on rustls's buffered API, two copies
/// inside it each way (`TlsDeframe`, `TlsPlaintext`; `TlsRecord`, `TlsOut` into the send
/// pool). The count the map gave before Fors had its own record layer.
const MIDDLE_TLS12: Map = &[
    (CopySite::TlsDeframe, 1),
    (CopySite::TlsPlaintext, 1),
    (CopySite::RelayStage, 1),
    (CopySite::ChanQueue, 1),
    (CopySite::TlsRecord, 1),
    (CopySite::TlsOut, 1),
];

/// What rustls's buffered API may allocate for one read: a plaintext buffer per record in,
/// a record buffer per record out, a receive-buffer resize per 4 KiB `read_tls`.
fn rustls_allocs(tls_in: &[u8], tls_out: &[u8]) -> u64 {
    (tls_records(tls_in) + tls_records(tls_out) + tls_in.len().div_ceil(4096)) as u64
}

/// Exit, DATA from the exit socket to the client: encoded in its stage slot, then as the
/// middle's send side.
const DOWNLOAD: Map = &[
    (CopySite::ExitEncode, 1),
    (CopySite::ChanQueue, 1),
    (CopySite::RecordSeal, 1),
];

/// Exit, a client's DATA cell to the exit socket (whole records per read): opened in the
/// receive buffer, staged, and its bytes go straight from the stage to the socket's send
/// buffer (no `Action::StreamWrite`).
const UPLOAD: Map = &[(CopySite::RelayStage, 1), (CopySite::SendPool, 1)];

/// Copies per cell a site the map lists as absent may still show (partial cells).
const ABSENT_CEILING: f64 = 0.1;

/// Checks one path's windows against its map row; returns the copies per cell.
fn check(path: &str, map: Map, windows: &[Window], cells: u64, cell_bytes: u64) -> u64 {
    let mut total = [0u64; SITES];
    for w in windows {
        for (t, b) in total.iter_mut().zip(w.bytes.iter()) {
            *t += b;
        }
    }
    let unit = cells * cell_bytes;
    let mut sum = 0;
    let mut line = String::new();
    for site in ALL {
        let bytes = total[site as usize];
        // Nearest whole copy: TLS headers and partial cells move a site by a few percent.
        let per_cell = (bytes + unit / 2) / unit;
        let want = map.iter().find(|(s, _)| *s == site).map_or(0, |(_, n)| *n);
        line += &format!(" {site:?}={:.3}", bytes as f64 / unit as f64);
        assert_eq!(
            per_cell,
            want,
            "{path}: {site:?} copied {bytes} bytes for {cells} cells ({:.3} per cell), the \
             copy map says {want} per cell",
            bytes as f64 / unit as f64
        );
        // Rounding alone would let 0.49 copies per cell pass as none: a site the map lists
        // as absent may carry at most a tenth of the cells (the straddling cell in
        // `ChanInbuf` is about one in 32).
        if want == 0 {
            assert!(
                bytes * 10 <= unit,
                "{path}: {site:?} copied {bytes} bytes for {cells} cells ({:.3} per cell), \
                 the copy map lists it as absent (at most {ABSENT_CEILING} per cell)",
                bytes as f64 / unit as f64
            );
        }
        sum += per_cell;
    }
    println!("{path}: {sum} copies per cell;{line}");
    sum
}

fn skip_unless_enabled() -> bool {
    if copies::ENABLED {
        return false;
    }
    println!("SKIPPED: copy counters are off (release build without the copy-count feature)");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "copy counters are off under CI"
    );
    true
}

#[test]
fn middle_cells_copies_and_allocations() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("middle_cells_copies_and_allocations");
    let mut m = Middle::new(s);
    for forward in [true, false] {
        let dir = if forward {
            "middle forward"
        } else {
            "middle backward"
        };
        let mut windows = Vec::new();
        let mut cells = 0;
        for round in 0..WARMUP_ROUNDS + ROUNDS {
            let mut input = if forward {
                m.prepare_forward(CELLS)
            } else {
                m.prepare_backward(CELLS)
            };
            let w = counted(|| m.deliver(forward, &mut input));
            let (output, got) = m.collect(forward);
            assert_eq!(got, CELLS, "{dir}: every cell passes");
            if round < WARMUP_ROUNDS {
                continue;
            }
            println!(
                "{dir}: round {round}: {} allocations for {CELLS} cells ({} TLS records in, {} out)",
                w.allocs,
                tls_records(&input),
                tls_records(&output)
            );
            assert_eq!(
                w.allocs, 0,
                "{dir}: {} allocations for {CELLS} cells: the node or the record layer \
                 allocates per cell or per record",
                w.allocs
            );
            cells += CELLS as u64;
            windows.push(w);
        }
        check(dir, MIDDLE, &windows, cells, 509);
    }
}

/// TLS 1.2 links stay on rustls: the old counts, and rustls's allocations per record.
#[test]
fn middle_cells_on_tls12_links_copies_and_allocations() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("middle_cells_on_tls12_links_copies_and_allocations");
    let mut m = Middle::with_tls12(s, true);
    assert_eq!(m.p.chan.stats().tls_path, TlsPath::RustlsTls12);
    assert_eq!(m.t.chan.stats().tls_path, TlsPath::RustlsTls12);
    for forward in [true, false] {
        let dir = if forward {
            "middle forward, TLS 1.2"
        } else {
            "middle backward, TLS 1.2"
        };
        let mut windows = Vec::new();
        let mut cells = 0;
        for round in 0..WARMUP_ROUNDS + ROUNDS {
            let mut input = if forward {
                m.prepare_forward(CELLS)
            } else {
                m.prepare_backward(CELLS)
            };
            let bound = rustls_allocs(&input, &[]);
            let w = counted(|| m.deliver(forward, &mut input));
            let (output, got) = m.collect(forward);
            assert_eq!(got, CELLS, "{dir}: every cell passes");
            if round < WARMUP_ROUNDS {
                continue;
            }
            let bound = bound + rustls_allocs(&[], &output);
            println!(
                "{dir}: round {round}: {} allocations for {CELLS} cells (rustls's bound {bound})",
                w.allocs
            );
            assert!(
                w.allocs <= bound,
                "{dir}: {} allocations for {CELLS} cells, more than rustls's {bound}",
                w.allocs
            );
            cells += CELLS as u64;
            windows.push(w);
        }
        check(dir, MIDDLE_TLS12, &windows, cells, 509);
    }
}

/// Reads as the shard makes them with the shipped profiles' receive buffers (16 KiB plus
/// `RECV_BUF_SLACK`) and the node's read caps: after the first full record is cut and
/// gathered, each read ends right after the next record's header, so every later record's
/// body arrives whole and is opened where it lies (`Channel::read_hint`): the three copies
/// of whole-record reads. No allocation, and one read per record.
#[test]
fn middle_cells_in_shipped_buffers_copies_and_allocations() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("middle_cells_in_shipped_buffers_copies_and_allocations");
    // The shard's buffers with the shipped (default) profile.
    let buf = fors::relay::shardcfg::shard_config_from_profile(
        &fors::config::hwprofile::HardwareProfile::default(),
        1,
        None,
    )
    .recv_buf_size as usize;
    assert_eq!(buf, fors::relay::node::fake::FAKE_RECV_BUF);
    let mut m = Middle::new(s);
    let mut windows = Vec::new();
    let mut cells = 0;
    // The socket: what the client sent and the node has not read yet.
    let mut stream = Vec::with_capacity(4 * CELLS * 600);
    for round in 0..WARMUP_ROUNDS + 2 * ROUNDS {
        let input = m.prepare_forward(CELLS);
        stream.extend_from_slice(&input);
        let held = stream.len();
        let mut reads = 0;
        let w = counted(|| reads = m.deliver_stream(true, &mut stream, buf));
        let records = tls_records(&input);
        let (_, got) = m.collect(true);
        if round < WARMUP_ROUNDS {
            continue;
        }
        assert_eq!(w.allocs, 0, "round {round}: {} allocations", w.allocs);
        // One read per record: each ends right after the next record's header.
        assert!(
            reads <= records + 1,
            "round {round}: {reads} reads of {} bytes for {records} records",
            held - stream.len()
        );
        cells += got as u64;
        windows.push(w);
    }
    assert!(cells > 0, "cells passed");
    check(
        "middle forward, shipped buffers with read caps",
        MIDDLE,
        &windows,
        cells,
        509,
    );
}

/// Reads of exactly 16 KiB that ignore the node's read caps (as a shard with the old
/// buffers would): the peer's full records never fit one read, so nearly every record is
/// gathered first — one copy more per cell, and still no allocation.
#[test]
fn middle_cells_in_16k_reads_copies_and_allocations() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("middle_cells_in_16k_reads_copies_and_allocations");
    let mut m = Middle::new(s);
    let mut windows = Vec::new();
    let mut cells = 0;
    for round in 0..WARMUP_ROUNDS + ROUNDS {
        let mut input = m.prepare_forward(CELLS);
        let w = counted(|| m.deliver_in_reads(true, &mut input, 16 * 1024));
        let (_, got) = m.collect(true);
        assert_eq!(got, CELLS, "every cell passes");
        if round < WARMUP_ROUNDS {
            continue;
        }
        assert_eq!(w.allocs, 0, "round {round}: {} allocations", w.allocs);
        cells += CELLS as u64;
        windows.push(w);
    }
    check(
        "middle forward, 16 KiB reads",
        MIDDLE_16K_READS,
        &windows,
        cells,
        509,
    );
}

#[test]
fn exit_download_copies_and_allocations() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("exit_download_copies_and_allocations");
    let mut e = Exit::new(s);
    let mut windows = Vec::new();
    let mut cells = 0;
    for round in 0..WARMUP_ROUNDS + ROUNDS {
        let mut data = e.prepare_download(CELLS);
        let w = counted(|| e.deliver_download(&mut data));
        let (output, got, n) = e.collect_download();
        assert!(got == data, "round {round}: the client gets the bytes");
        if round < WARMUP_ROUNDS {
            continue;
        }
        println!(
            "exit download: round {round}: {} allocations for {n} cells ({} TLS records out)",
            w.allocs,
            tls_records(&output)
        );
        assert_eq!(
            w.allocs, 0,
            "exit download: {} allocations for {n} cells",
            w.allocs
        );
        cells += n as u64;
        windows.push(w);
    }
    check("exit download", DOWNLOAD, &windows, cells, 509);
}

#[test]
fn exit_upload_copies_and_allocations() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("exit_upload_copies_and_allocations");
    let mut e = Exit::new(s);
    let mut windows = Vec::new();
    let mut cells = 0;
    for round in 0..WARMUP_ROUNDS + ROUNDS {
        let (mut input, data) = e.prepare_upload(CELLS);
        let w = counted(|| e.deliver_upload(&mut input));
        let (got, to_client) = e.collect_upload();
        assert!(got == data, "round {round}: the exit socket gets the bytes");
        if round < WARMUP_ROUNDS {
            continue;
        }
        // The node's SENDMEs to the client go out as TLS records too.
        println!(
            "exit upload: round {round}: {} allocations for {CELLS} cells ({} TLS records in, {} out)",
            w.allocs,
            tls_records(&input),
            tls_records(&to_client)
        );
        assert_eq!(
            w.allocs, 0,
            "exit upload: {} allocations for {CELLS} cells",
            w.allocs
        );
        cells += CELLS as u64;
        windows.push(w);
    }
    check("exit upload", UPLOAD, &windows, cells, 509);
}

/// The node's records to the target when its send queue ends in a partly filled buffer
/// with only a few bytes free (the peer has not taken all earlier output): no record may
/// start there with less than one cell of plaintext (a tiny record on the wire, a split
/// cell for the receiver), and the flush must not fall back to the channel's TLS output
/// buffer and `send_partial` (the `SendPool` copy). The bytes must reach the target whole
/// and in order (its record layer opens every record; AEAD fails on a gap or a swap).
#[test]
fn middle_cells_after_a_small_send_buffer_tail() {
    if skip_unless_enabled() {
        return;
    }
    let s = seed("middle_cells_after_a_small_send_buffer_tail");
    let mut m = Middle::new(s);
    let mut windows = Vec::new();
    let mut cells = 0;
    // Tails from 1 byte (less than a record's overhead) to one byte short of a cell's record.
    let tails = [1, 5, 22, 23, 100, 300, 535, 536, 600];
    for (round, &tail) in tails.iter().enumerate() {
        let mut input = m.prepare_forward(CELLS);
        let shard = m.shard;
        let conn = m.t.conn;
        m.net.shards[shard].conns.get_mut(&conn).unwrap().tail_free = tail;
        let w = counted(|| m.deliver(true, &mut input));
        let (output, got) = m.collect(true);
        assert_eq!(got, CELLS, "tail {tail}: every cell passes, in order");
        let lens = record_plaintext_lens(&output);
        println!("tail {tail}: records' plaintext {lens:?}");
        if let Some((_, init)) = lens.split_last() {
            for &len in init {
                assert!(
                    len >= 514,
                    "tail {tail}: a record of {len} bytes of plaintext before the flush's \
                     last ({lens:?})"
                );
            }
        }
        if tail < 536 {
            // The first record went into a fresh buffer: the tail took nothing.
            assert!(lens[0] >= 514, "tail {tail}: {lens:?}");
        }
        assert_eq!(
            w.bytes[CopySite::SendPool as usize],
            0,
            "tail {tail}: the flush went through the TLS output buffer and `send_partial`"
        );
        assert_eq!(w.bytes[CopySite::TlsOut as usize], 0, "tail {tail}");
        if round < WARMUP_ROUNDS {
            continue;
        }
        assert_eq!(w.allocs, 0, "tail {tail}: {} allocations", w.allocs);
        cells += CELLS as u64;
        windows.push(w);
    }
    check("middle forward, small tails", MIDDLE, &windows, cells, 509);
}

/// The plaintext length of each TLS 1.3 record in `bytes` (a whole number of records):
/// the record's length less the 16-byte AEAD tag and the 1-byte inner content type.
fn record_plaintext_lens(bytes: &[u8]) -> Vec<usize> {
    let mut lens = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len = u16::from_be_bytes([bytes[i + 3], bytes[i + 4]]) as usize;
        lens.push(len - 17);
        i += 5 + len;
    }
    assert_eq!(i, bytes.len(), "not a whole number of TLS records");
    lens
}
