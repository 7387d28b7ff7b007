//! The in-place TLS 1.3 record layer (`proto::tls_record`) against rustls's buffered path
//! (what `proto::channel` runs today), per 514-byte cell, for records of 1 cell and of 8
//! cells (4112 bytes), each suite:
//!
//! * seal: cells in memory → sealed records in an output buffer. Ours copies the cells
//!   into the output buffer (the one copy a channel would still make, into the send pool)
//!   and seals there; rustls's `writer().write_all` + `write_tls` copies into its record
//!   `Vec`, seals, and copies into the output buffer.
//! * open: records in a receive buffer → cells framed in the plaintext. Ours decrypts in
//!   place; rustls's `read_tls` + `process_new_packets` + `reader().fill_buf` copies into
//!   its deframer buffer and into a plaintext `Vec` (as `Channel::drain_plaintext`).
//!
//! Both sides are Fors's link configs (`channel::tls`), responder role, the initiator forced
//! to the suite; the records are prepared outside the timed part.
//!
//! ```text
//! cargo bench --bench tls_record            # ns/cell, fastest and median of RUNS runs
//! ```
//!
//! Seeded (`FORS_TEST_SEED`); the seed is printed.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::Instant;

use fors::proto::channel::tls;
use fors::proto::tls_record::testing::{
    handshake_as_server, link_credentials, peer_output, peer_read, peer_write, provider_with_suite,
};
use fors::proto::tls_record::{ReadEvent, TlsRecordLayer, HEADER_LEN, SEAL_TRAILER_LEN};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rustls::crypto::ring::cipher_suite::{
    TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384, TLS13_CHACHA20_POLY1305_SHA256,
};
use rustls::{ClientConnection, Connection, ServerConnection};

const CELL: usize = 514;
/// Cells per timed run, and runs (fastest and median reported).
const CELLS: usize = 1024;
const RUNS: usize = 31;

/// rustls's buffered pair: the reference, as channels use it.
struct Reference {
    server: Connection,
    client: Connection,
}

impl Reference {
    fn new(server_cfg: Arc<rustls::ServerConfig>, client_cfg: Arc<rustls::ClientConfig>) -> Self {
        let mut server = Connection::Server(ServerConnection::new(server_cfg).expect("server"));
        let mut client = Connection::Client(
            ClientConnection::new(client_cfg, fors::proto::tls_record::testing::sni())
                .expect("client"),
        );
        for _ in 0..16 {
            let c2s = peer_output(&mut client);
            peer_read(&mut server, &c2s).expect("server handshake");
            let s2c = peer_output(&mut server);
            peer_read(&mut client, &s2c).expect("client handshake");
            if !server.is_handshaking() && !client.is_handshaking() && !client.wants_write() {
                return Reference { server, client };
            }
        }
        panic!("reference handshake did not finish");
    }
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

/// Ours: copy `k` cells into the output buffer behind a header gap, seal in place.
fn seal_ours(layer: &mut TlsRecordLayer, cells: &[u8], k: usize, out: &mut [u8]) -> usize {
    let mut at = 0;
    for chunk in cells.chunks(k * CELL) {
        out[at + HEADER_LEN..at + HEADER_LEN + chunk.len()].copy_from_slice(chunk);
        at += layer
            .seal_app_data(&mut out[at..], chunk.len())
            .expect("seal");
    }
    at
}

/// rustls: `write_all` of `k` cells (one record), then `write_tls` into the output buffer
/// (per record: rustls holds at most 64 KiB of records unless asked otherwise).
fn seal_rustls(conn: &mut Connection, cells: &[u8], k: usize, out: &mut Vec<u8>) -> usize {
    out.clear();
    for chunk in cells.chunks(k * CELL) {
        conn.writer().write_all(chunk).expect("write");
        while conn.wants_write() {
            conn.write_tls(out).expect("write_tls");
        }
    }
    out.len()
}

/// Ours: open each record in place and frame its cells (touch each cell's first byte).
fn open_ours(layer: &mut TlsRecordLayer, rx: &mut [u8]) -> u64 {
    let (mut off, mut sum) = (0, 0u64);
    while off < rx.len() {
        match layer.read(&mut rx[off..]).expect("read") {
            ReadEvent::Data {
                plaintext,
                consumed,
            } => {
                for cell in rx[off + plaintext.start..off + plaintext.end].chunks(CELL) {
                    sum += u64::from(black_box(cell)[0]);
                }
                off += consumed;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    sum
}

/// rustls: `read_tls` + `process_new_packets`, then frame cells in `fill_buf` chunks.
fn open_rustls(conn: &mut Connection, mut rx: &[u8]) -> u64 {
    let mut sum = 0u64;
    while !rx.is_empty() {
        conn.read_tls(&mut rx).expect("read_tls");
        conn.process_new_packets().expect("process");
        let mut reader = conn.reader();
        while let Ok(chunk) = reader.fill_buf() {
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            for cell in chunk.chunks(CELL) {
                sum += u64::from(black_box(cell)[0]);
            }
            reader.consume(n);
        }
    }
    sum
}

fn main() {
    let seed = fors_testkit::test_seed("tls_record");
    let mut rng = StdRng::seed_from_u64(seed);
    let (cert, key) = link_credentials(&mut rng);
    let mut cells = vec![0u8; CELLS * CELL];
    rng.fill(&mut cells[..]);

    for (name, suite) in [
        ("AES-128-GCM", TLS13_AES_128_GCM_SHA256),
        ("AES-256-GCM", TLS13_AES_256_GCM_SHA384),
        ("ChaCha20-Poly1305", TLS13_CHACHA20_POLY1305_SHA256),
    ] {
        let server_cfg = tls::server_config(tls::provider(), &cert, &key).expect("config");
        let client_cfg = tls::client_config(provider_with_suite(suite)).expect("config");
        let (mut ours, mut ours_peer) =
            handshake_as_server(server_cfg.clone(), client_cfg.clone()).expect("handshake");
        let mut reference = Reference::new(server_cfg, client_cfg);

        for k in [1usize, 8] {
            let records = CELLS / k;
            let mut out = vec![0u8; CELLS * CELL + records * (HEADER_LEN + SEAL_TRAILER_LEN)];
            let mut out_ref = Vec::with_capacity(out.len());
            let (mut seal_o, mut seal_r, mut open_o, mut open_r) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            // One warm-up run (checked: the peers read back exactly the cells), then RUNS.
            for run in 0..=RUNS {
                let t = Instant::now();
                let n = seal_ours(&mut ours, &cells, k, &mut out);
                let ns_o = t.elapsed().as_nanos() as f64;
                let t = Instant::now();
                let n_ref = seal_rustls(&mut reference.server, &cells, k, &mut out_ref);
                let ns_r = t.elapsed().as_nanos() as f64;
                assert_eq!(n, n_ref, "same records on the wire");
                if run == 0 {
                    assert_eq!(peer_read(&mut ours_peer, &out[..n]).expect("peer"), cells);
                    assert_eq!(
                        peer_read(&mut reference.client, &out_ref).expect("peer"),
                        cells
                    );
                } else {
                    // Keep the peers' read sequence numbers in step without timing it.
                    peer_read(&mut ours_peer, &out[..n]).expect("peer");
                    peer_read(&mut reference.client, &out_ref).expect("peer");
                    seal_o.push(ns_o / CELLS as f64);
                    seal_r.push(ns_r / CELLS as f64);
                }

                let mut rx: Vec<u8> = cells
                    .chunks(k * CELL)
                    .flat_map(|c| peer_write(&mut ours_peer, c))
                    .collect();
                let rx_ref: Vec<u8> = cells
                    .chunks(k * CELL)
                    .flat_map(|c| peer_write(&mut reference.client, c))
                    .collect();
                assert_eq!(rx.len(), rx_ref.len());
                let t = Instant::now();
                let s_o = open_ours(&mut ours, &mut rx);
                let ns_o = t.elapsed().as_nanos() as f64;
                let t = Instant::now();
                let s_r = open_rustls(&mut reference.server, &rx_ref);
                let ns_r = t.elapsed().as_nanos() as f64;
                assert_eq!(s_o, s_r, "both framed the same cells");
                if run > 0 {
                    open_o.push(ns_o / CELLS as f64);
                    open_r.push(ns_r / CELLS as f64);
                }
            }
            for (what, o, r) in [("seal", seal_o, seal_r), ("open", open_o, open_r)] {
                let (of, om) = stats(o);
                let (rf, rm) = stats(r);
                println!(
                    "{name:18} {k} cell(s)/record {what}: ours {of:6.1} ({om:6.1})  rustls {rf:6.1} ({rm:6.1})  ns/cell fastest (median); ours/rustls {:.2} ({:.2})",
                    of / rf,
                    om / rm
                );
            }
        }
    }
    println!("{RUNS} runs of {CELLS} cells of {CELL} bytes per row");
}
