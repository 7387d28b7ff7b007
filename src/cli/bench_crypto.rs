//! `fors bench-crypto [--json] [--only KEY]...`: per-cell relay-crypto and per-handshake costs
//! on this CPU, next to OpenSSL's cost for the same 509-byte work measured in the same run.
//!
//! Every figure is one named measurement in [`MEASUREMENTS`]. Per-cell figures are the fastest
//! of many short timed repetitions over pre-built cells: a repetition short enough to fit in one
//! scheduler time slice is rarely preempted, so the minimum filters out time lost to other
//! processes on a shared machine (it does not filter cache pollution). Handshake figures are
//! medians of per-call times. The whole run takes a few seconds.
//!
//! JSON output (`--json`), one object; these keys are stable (new ones may be added):
//! * `cpu_features`: `model` (the CPU's name from `/proc/cpuinfo`, or `"unknown"`), the chosen
//!   paths `aes`, `sha1`, `sha1_multi`, `sha1_multi_min_circuits`, and the detected features
//!   `aes_ni`, `vaes256`, `vaes512`, `sha_ni`, `avx2`, `avx512` (booleans).
//! * one key per measurement in [`MEASUREMENTS`] (`middle_forward_ns`, ..., `aes_ctr_cell_ns`,
//!   `sha1_cell_ns`, `openssl_509_ns`): a number, or an object of numbers keyed by circuit count
//!   or implementation name (`aes_ctr_cell_ns`: `portable`, `aes_ni`, `vaes256`, `vaes512`, those
//!   this CPU runs). A measurement that could not be made is `{"unavailable": "<reason>"}`.
//! * `openssl_509_ns`: `aes_128_ctr` and `sha1`, nanoseconds per 509-byte operation of one
//!   OpenSSL stream (`openssl speed -mr -evp ALG -bytes 509 -seconds 1`; user CPU time). The
//!   version that ran is `cpu_features.openssl` (`"unavailable: <reason>"` without the tool).
//! * `cgo_forward_ns`, `cgo_forward_batched_ns`, `cgo_backward_ns`, `cgo_backward_batched_ns`,
//!   `cgo_originate_ns`, `cgo_originate_batched_ns`: CGO relay crypto (AES-128, as C tor 0.4.9
//!   negotiates it) for the same work as the tor1 figures `middle_forward_ns`,
//!   `middle_forward_batched_ns`, `middle_backward_ns`, `exit_originate_ns`,
//!   `exit_originate_batched_ns`: a cell passing through one layer (forward: with the check
//!   whether it is for this hop), a cell relayed toward the client, and a cell originated
//!   (tag, encryption, key update). Batched figures are keyed by circuit count.
//!   `FORS_CGO_INTERLEAVE=off` measures the batched CGO figures without the interleaved
//!   multi-cell kernel.
//! * `cgo_vs_tor1` (when both were measured): each CGO figure divided by its tor1 counterpart
//!   from the same run (keyed like the figure; `single` for one circuit). Above 1: CGO costs more.
//! * `vs_openssl` (when both sides were measured): `aes_ctr_cell` maps each AES implementation
//!   to its ns/cell divided by OpenSSL's AES-128-CTR ns per 509 bytes; `sha1_cell` maps each
//!   SHA-1 strategy to its ns/cell divided by OpenSSL's SHA-1 ns per 509 bytes. Below 1 means
//!   Fors is faster. (OpenSSL's SHA-1 figure hashes 509 bytes from a fresh context and
//!   finalizes; `sha1_cell_ns` absorbs 509 bytes into a running digest and finalizes a copy:
//!   the same number of compression-function calls.)

use crate::crypto::handshake::ntor::NtorClient;
use crate::crypto::handshake::ntor_v3::NtorV3Client;
use crate::crypto::handshake::{
    negotiate_circ_params, ntor, ntor_v3, CircuitExtension, NtorKeyMap, NtorKeyPair,
    NtorV3ServerPolicy,
};
use crate::crypto::ids::{Ed25519Identity, RsaIdentity};
use crate::crypto::keymat::Tor1KeyMaterial;
use crate::crypto::relay::aes_ctr::Aes128Ctr;
use crate::crypto::relay::cgo::{
    backward_relay_multi as cgo_backward_relay_multi, forward_multi as cgo_forward_multi,
    originate_multi as cgo_originate_multi, CgoRelayCrypto128, CGO_AES128_KEY_MATERIAL_LEN,
};
use crate::crypto::relay::cpu::{CpuFeatures, Sha1Impl, Sha1MultiImpl, Tor1Engine};
use crate::crypto::relay::sha1::Sha1State;
use crate::crypto::relay::sha1_mb::Sha1Lanes;
use crate::crypto::relay::{
    forward_multi_indexed, originate_multi_indexed, CellBody, Tor1ClientCircuit, Tor1ClientLayer,
    Tor1RelayCrypto, CELL_BODY_LEN,
};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

/// Circuit counts for the "batched across N circuits" figures.
const BATCHES: [usize; 3] = [8, 16, 64];
/// Cells per timed repetition (about 0.5 MiB of bodies, a few tens of microseconds).
const CELLS: usize = 1024;
/// Timed repetitions per figure (the fastest is reported).
const REPS: usize = 201;

/// One figure: its JSON key, a description, its unit, and how to measure it.
struct Measurement {
    key: &'static str,
    what: &'static str,
    unit: &'static str,
    run: fn() -> Figure,
}

/// A measured figure: one number, or one per batch size / variant, or why there is none.
enum Figure {
    One(f64),
    Per(Vec<(String, f64)>),
    Unavailable(String),
}

/// Everything `bench-crypto` reports, in output order.
const MEASUREMENTS: &[Measurement] = &[
    Measurement { key: "middle_forward_ns", what: "middle forward, one layer, one circuit", unit: "ns/cell", run: middle_forward },
    Measurement {
        key: "middle_forward_batched_ns",
        what: "middle forward, one cell each of N circuits",
        unit: "ns/cell",
        run: middle_forward_batched,
    },
    Measurement {
        key: "middle_forward_run_ns",
        what: "middle forward, forward_batch of N cells of one circuit",
        unit: "ns/cell",
        run: middle_forward_run,
    },
    Measurement {
        key: "middle_backward_ns",
        what: "middle backward, a cell relayed toward the client through one layer, one circuit",
        unit: "ns/cell",
        run: middle_backward,
    },
    Measurement { key: "exit_forward_ns", what: "exit forward (decrypt + digest check), one circuit", unit: "ns/cell", run: exit_forward },
    Measurement {
        key: "exit_forward_batched_ns",
        what: "exit forward, one cell each of N circuits (forward_multi)",
        unit: "ns/cell",
        run: exit_forward_batched,
    },
    Measurement { key: "exit_originate_ns", what: "exit originate (digest + encrypt), one circuit", unit: "ns/cell", run: exit_originate },
    Measurement {
        key: "exit_originate_batched_ns",
        what: "exit originate, one cell each of N circuits (originate_multi)",
        unit: "ns/cell",
        run: exit_originate_batched,
    },
    Measurement {
        key: "cgo_forward_ns",
        what: "CGO forward, a cell passing through one layer, one circuit",
        unit: "ns/cell",
        run: cgo_forward,
    },
    Measurement {
        key: "cgo_forward_batched_ns",
        what: "CGO forward, one cell each of N circuits (cgo::forward_multi)",
        unit: "ns/cell",
        run: cgo_forward_batched,
    },
    Measurement {
        key: "cgo_backward_ns",
        what: "CGO backward, a cell relayed toward the client through one layer, one circuit",
        unit: "ns/cell",
        run: cgo_backward,
    },
    Measurement {
        key: "cgo_backward_batched_ns",
        what: "CGO backward, one cell each of N circuits (cgo::backward_relay_multi)",
        unit: "ns/cell",
        run: cgo_backward_batched,
    },
    Measurement {
        key: "cgo_originate_ns",
        what: "CGO originate (tag + encrypt + key update), one circuit",
        unit: "ns/cell",
        run: cgo_originate,
    },
    Measurement {
        key: "cgo_originate_batched_ns",
        what: "CGO originate, one cell each of N circuits (cgo::originate_multi)",
        unit: "ns/cell",
        run: cgo_originate_batched,
    },
    Measurement { key: "ntor_server_us", what: "ntor (CREATE2 type 2) server handshake, median", unit: "µs", run: ntor_server },
    Measurement {
        key: "ntor_v3_server_us",
        what: "ntor-v3 (CREATE2 type 3, CC request) server handshake, median",
        unit: "µs",
        run: ntor_v3_server,
    },
    Measurement {
        key: "aes_ctr_cell_ns",
        what: "AES-128-CTR keystream over one 509-byte cell, per implementation",
        unit: "ns/cell",
        run: aes_strategies,
    },
    Measurement {
        key: "sha1_cell_ns",
        what: "SHA-1 running digest of one cell (absorb 509 B + finalize a copy), per strategy, full groups",
        unit: "ns/cell",
        run: sha1_strategies,
    },
    Measurement {
        key: "openssl_509_ns",
        what: "OpenSSL (`openssl speed -evp`, one stream) per 509 bytes: aes_128_ctr and sha1",
        unit: "ns/509 B",
        run: openssl_509,
    },
];

/// Runs the crypto benchmark; returns the process exit code.
pub fn run(args: &[String]) -> i32 {
    let mut as_json = false;
    let mut only: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => as_json = true,
            "--only" => match it.next() {
                Some(k) if MEASUREMENTS.iter().any(|m| m.key == k) => only.push(k),
                _ => {
                    eprintln!("fors bench-crypto: --only needs one of the measurement keys");
                    return 2;
                }
            },
            "-h" | "--help" => {
                println!("usage: fors bench-crypto [--json] [--only KEY]...");
                return 0;
            }
            other => {
                eprintln!("fors bench-crypto: unknown argument {other:?}\nusage: fors bench-crypto [--json] [--only KEY]...");
                return 2;
            }
        }
    }
    let mut out = Map::new();
    out.insert("cpu_features".into(), cpu_features());
    let mut text = String::new();
    let e = Tor1Engine::get();
    text.push_str(&format!(
        "CPU: {} ({})\nrelay crypto on this CPU: AES {:?}, SHA-1 {:?} (one circuit), {:?} across circuits (from {} circuits)\n",
        cpu_model(),
        feature_list(&e.features),
        e.aes,
        e.sha1,
        e.sha1_multi,
        e.multi_min_lanes
    ));
    let mut figures: Vec<(&'static str, Figure)> = Vec::new();
    for m in MEASUREMENTS
        .iter()
        .filter(|m| only.is_empty() || only.contains(&m.key))
    {
        let fig = (m.run)();
        match &fig {
            Figure::One(v) => text.push_str(&format!(
                "{:<28} {:>9.1} {}  {}\n",
                m.key, v, m.unit, m.what
            )),
            Figure::Per(vs) => {
                text.push_str(&format!("{:<28} {:>9} {}  {}\n", m.key, "", m.unit, m.what));
                for (k, v) in vs {
                    text.push_str(&format!("{:>28} {:>9.1}\n", k, v));
                }
            }
            Figure::Unavailable(why) => text.push_str(&format!(
                "{:<28} {:>9} {}  {}\n{:>28} unavailable: {}\n",
                m.key, "", m.unit, m.what, "", why
            )),
        }
        out.insert(m.key.into(), figure_json(&fig, round1));
        figures.push((m.key, fig));
    }
    let vs_tor1 = cgo_vs_tor1(&figures);
    if !vs_tor1.is_empty() {
        text.push_str("cgo_vs_tor1                  CGO ns / tor1 ns for the same work, same run (> 1: CGO costs more)\n");
        for (k, r) in &vs_tor1 {
            text.push_str(&format!("{:>28} {:>9.2}\n", k, r));
        }
        let mut json_vs = Map::new();
        for (k, r) in vs_tor1 {
            json_vs.insert(k, json!(round2(r)));
        }
        out.insert("cgo_vs_tor1".into(), Value::Object(json_vs));
    }
    let vs = vs_openssl(&figures);
    if !vs.is_empty() {
        text.push_str("vs_openssl                   Fors ns / OpenSSL ns for the same 509 bytes, one stream (< 1: Fors faster)\n");
        let mut json_vs = Map::new();
        for (group, ratios) in vs {
            for (k, r) in &ratios {
                text.push_str(&format!("{:>28} {:>9.2}  {group}\n", k, r));
            }
            json_vs.insert(group.into(), figure_json(&Figure::Per(ratios), round2));
        }
        out.insert("vs_openssl".into(), Value::Object(json_vs));
    }
    if as_json {
        match serde_json::to_string_pretty(&Value::Object(out)) {
            Ok(s) => text = s + "\n",
            Err(e) => {
                eprintln!("fors bench-crypto: {e}");
                return 1;
            }
        }
    }
    // A closed pipe (e.g. `| head`) is not worth a panic.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn figure_json(fig: &Figure, round: fn(f64) -> f64) -> Value {
    match fig {
        Figure::One(v) => json!(round(*v)),
        Figure::Per(vs) => Value::Object(
            vs.iter()
                .map(|(k, v)| (k.clone(), json!(round(*v))))
                .collect(),
        ),
        Figure::Unavailable(why) => json!({ "unavailable": why }),
    }
}

/// Fors's per-cell AES and SHA-1 figures divided by OpenSSL's for 509 bytes, when this run
/// measured both sides.
fn vs_openssl(figures: &[(&str, Figure)]) -> Vec<(&'static str, Vec<(String, f64)>)> {
    let per = |key: &str| {
        figures.iter().find_map(|(k, f)| match f {
            Figure::Per(vs) if *k == key => Some(vs),
            _ => None,
        })
    };
    let Some(ossl) = per("openssl_509_ns") else {
        return Vec::new();
    };
    let ossl = |alg: &str| ossl.iter().find(|(k, _)| k == alg).map(|(_, v)| *v);
    let mut out = Vec::new();
    for (group, ours, alg) in [
        ("aes_ctr_cell", "aes_ctr_cell_ns", "aes_128_ctr"),
        ("sha1_cell", "sha1_cell_ns", "sha1"),
    ] {
        if let (Some(ours), Some(theirs)) = (per(ours), ossl(alg)) {
            out.push((
                group,
                ours.iter().map(|(k, v)| (k.clone(), v / theirs)).collect(),
            ));
        }
    }
    out
}

/// Each CGO figure over its tor1 counterpart, keyed `<cgo key>/<circuits or "single">`.
fn cgo_vs_tor1(figures: &[(&str, Figure)]) -> Vec<(String, f64)> {
    let get = |key: &str| figures.iter().find(|(k, _)| *k == key).map(|(_, f)| f);
    let mut out = Vec::new();
    for (cgo, tor1) in [
        ("cgo_forward_ns", "middle_forward_ns"),
        ("cgo_forward_batched_ns", "middle_forward_batched_ns"),
        ("cgo_backward_ns", "middle_backward_ns"),
        ("cgo_originate_ns", "exit_originate_ns"),
        ("cgo_originate_batched_ns", "exit_originate_batched_ns"),
    ] {
        match (get(cgo), get(tor1)) {
            (Some(Figure::One(c)), Some(Figure::One(t))) => {
                out.push((format!("{cgo}/single"), c / t));
            }
            (Some(Figure::Per(cs)), Some(Figure::Per(ts))) => {
                for (n, c) in cs {
                    if let Some((_, t)) = ts.iter().find(|(m, _)| m == n) {
                        out.push((format!("{cgo}/{n}"), c / t));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn cpu_features() -> Value {
    let e = Tor1Engine::get();
    let f: &CpuFeatures = &e.features;
    json!({
        "model": cpu_model(),
        "openssl": openssl_version(),
        "aes": format!("{:?}", e.aes),
        "sha1": format!("{:?}", e.sha1),
        "sha1_multi": format!("{:?}", e.sha1_multi),
        "sha1_multi_min_circuits": e.multi_min_lanes,
        "aes_ni": f.aes_ni,
        "vaes256": f.vaes256,
        "vaes512": f.vaes512,
        "sha_ni": f.sha_ni,
        "avx2": f.avx2,
        "avx512": f.avx512,
    })
}

/// The CPU's marketing name (`model name` in `/proc/cpuinfo`), or "unknown".
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The relay-crypto features detected, as a space-separated list.
fn feature_list(f: &CpuFeatures) -> String {
    [
        ("aes_ni", f.aes_ni),
        ("vaes256", f.vaes256),
        ("vaes512", f.vaes512),
        ("sha_ni", f.sha_ni),
        ("avx2", f.avx2),
        ("avx512", f.avx512),
    ]
    .iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| *n)
    .collect::<Vec<_>>()
    .join(" ")
}

/// Fastest of [`REPS`] runs of `rep` (which returns elapsed nanoseconds for `cells` cells),
/// after a warm-up run, in nanoseconds per cell.
fn per_cell(cells: usize, mut rep: impl FnMut() -> f64) -> f64 {
    rep();
    (0..REPS)
        .map(|_| rep() / cells as f64)
        .fold(f64::INFINITY, f64::min)
}

fn keys(rng: &mut StdRng) -> Tor1KeyMaterial {
    let mut k = [0u8; Tor1KeyMaterial::KDF_LEN];
    rng.fill_bytes(&mut k);
    Tor1KeyMaterial::from_kdf_output(&k)
}

fn random_cells(rng: &mut StdRng, n: usize) -> Vec<CellBody> {
    let mut v = vec![[0u8; CELL_BODY_LEN]; n];
    for c in &mut v {
        rng.fill_bytes(c);
    }
    v
}

/// `n` fresh relay states (and the client layers that match them).
fn circuits(rng: &mut StdRng, n: usize) -> (Vec<Tor1RelayCrypto>, Vec<Tor1ClientCircuit>) {
    let mut relays = Vec::with_capacity(n);
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let k = keys(rng);
        relays.push(Tor1RelayCrypto::new(&k));
        let mut c = Tor1ClientCircuit::new();
        c.push_hop(Tor1ClientLayer::new(&k));
        clients.push(c);
    }
    (relays, clients)
}

fn timed(f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_nanos() as f64
}

fn middle_forward() -> Figure {
    let mut rng = StdRng::seed_from_u64(1);
    let (mut relays, _) = circuits(&mut rng, 1);
    // Ciphertext passing through: recognized is almost never zero after one layer.
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::One(per_cell(CELLS, || {
        timed(|| {
            for c in cells.iter_mut() {
                black_box(relays[0].recognize(c));
            }
        })
    }))
}

fn middle_forward_batched() -> Figure {
    let mut rng = StdRng::seed_from_u64(2);
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let (mut relays, _) = circuits(&mut rng, n);
                let v = per_cell(CELLS, || {
                    timed(|| {
                        for round in cells.chunks_exact_mut(n) {
                            for (r, c) in relays.iter_mut().zip(round.iter_mut()) {
                                black_box(r.recognize(c));
                            }
                        }
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

fn middle_forward_run() -> Figure {
    let mut rng = StdRng::seed_from_u64(3);
    let (mut relays, _) = circuits(&mut rng, 1);
    let mut cells = random_cells(&mut rng, CELLS);
    let mut for_us = [false; 64];
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let v = per_cell(CELLS, || {
                    timed(|| {
                        for run in cells.chunks_exact_mut(n) {
                            black_box(relays[0].forward_batch(run, &mut for_us[..n]));
                        }
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

/// Client-originated cells for `n` circuits, laid out round by round (`cells[r * n + c]` is
/// circuit `c`'s cell of round `r`), and the relay states to receive them from the start.
fn exit_inbound(rng: &mut StdRng, n: usize) -> (Vec<Tor1RelayCrypto>, Vec<CellBody>) {
    let (relays, mut clients) = circuits(rng, n);
    let mut cells = random_cells(rng, CELLS / n * n);
    for round in cells.chunks_exact_mut(n) {
        for (client, c) in clients.iter_mut().zip(round.iter_mut()) {
            c[1] = 0;
            c[2] = 0;
            // Hop 0 exists: the circuit was built with one layer just above.
            let _ = client.originate(0, c);
        }
    }
    (relays, cells)
}

fn exit_forward() -> Figure {
    let mut rng = StdRng::seed_from_u64(4);
    let (fresh, cells) = exit_inbound(&mut rng, 1);
    Figure::One(per_cell(cells.len(), || {
        let mut relay = fresh[0].clone();
        let mut work = cells.clone();
        timed(|| {
            for c in work.iter_mut() {
                black_box(relay.recognize(c));
            }
        })
    }))
}

fn exit_forward_batched() -> Figure {
    let mut rng = StdRng::seed_from_u64(5);
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let (fresh, cells) = exit_inbound(&mut rng, n);
                let circ: Vec<usize> = (0..n).collect();
                let mut for_us = vec![false; n];
                let v = per_cell(cells.len(), || {
                    let mut relays = fresh.clone();
                    let mut work = cells.clone();
                    timed(|| {
                        for round in work.chunks_exact_mut(n) {
                            black_box(forward_multi_indexed(
                                &mut relays,
                                round,
                                &circ,
                                &mut for_us,
                            ));
                        }
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

fn middle_backward() -> Figure {
    let mut rng = StdRng::seed_from_u64(9);
    let (mut relays, _) = circuits(&mut rng, 1);
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::One(per_cell(CELLS, || {
        timed(|| {
            for c in cells.iter_mut() {
                relays[0].backward_relay(c);
            }
            black_box(&mut cells);
        })
    }))
}

fn exit_originate() -> Figure {
    let mut rng = StdRng::seed_from_u64(6);
    let (mut relays, _) = circuits(&mut rng, 1);
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::One(per_cell(CELLS, || {
        timed(|| {
            for c in cells.iter_mut() {
                black_box(relays[0].originate(c));
            }
        })
    }))
}

fn exit_originate_batched() -> Figure {
    let mut rng = StdRng::seed_from_u64(7);
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let (mut relays, _) = circuits(&mut rng, n);
                let circ: Vec<usize> = (0..n).collect();
                let v = per_cell(CELLS / n * n, || {
                    timed(|| {
                        for round in cells.chunks_exact_mut(n) {
                            originate_multi_indexed(&mut relays, round, &circ, None);
                        }
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

/// `n` fresh CGO relay states with random keys.
fn cgo_circuits(rng: &mut StdRng, n: usize) -> Vec<CgoRelayCrypto128> {
    (0..n)
        .map(|_| {
            let mut f = [0u8; CGO_AES128_KEY_MATERIAL_LEN];
            rng.fill_bytes(&mut f);
            let (fwd, back) = f.split_at(CGO_AES128_KEY_MATERIAL_LEN / 2);
            // Lengths come from the constant above: from_directions cannot refuse them.
            CgoRelayCrypto128::from_directions(fwd, back).expect("AES-128 key lengths")
        })
        .collect()
}

/// RELAY (tor-spec "Cell commands"): the command the CGO figures tweak with.
const RELAY_CMD: u8 = 3;

fn cgo_forward() -> Figure {
    let mut rng = StdRng::seed_from_u64(21);
    let mut relays = cgo_circuits(&mut rng, 1);
    // Ciphertext passing through: a random tag all but never equals the hop's nonce.
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::One(per_cell(CELLS, || {
        timed(|| {
            for c in cells.iter_mut() {
                black_box(relays[0].recognize(RELAY_CMD, c));
            }
        })
    }))
}

fn cgo_forward_batched() -> Figure {
    let mut rng = StdRng::seed_from_u64(22);
    let mut cells = random_cells(&mut rng, CELLS);
    let cmds = vec![RELAY_CMD; CELLS];
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let mut relays = cgo_circuits(&mut rng, n);
                let circ: Vec<usize> = (0..n).collect();
                let mut for_us = vec![false; n];
                let v = per_cell(CELLS / n * n, || {
                    timed(|| {
                        for round in cells.chunks_exact_mut(n) {
                            black_box(cgo_forward_multi(
                                &mut relays,
                                &circ,
                                &cmds[..n],
                                round,
                                &mut for_us,
                            ));
                        }
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

fn cgo_backward() -> Figure {
    let mut rng = StdRng::seed_from_u64(25);
    let mut relays = cgo_circuits(&mut rng, 1);
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::One(per_cell(CELLS, || {
        timed(|| {
            for c in cells.iter_mut() {
                relays[0].backward_relay(RELAY_CMD, c);
            }
            black_box(&mut cells);
        })
    }))
}

fn cgo_backward_batched() -> Figure {
    let mut rng = StdRng::seed_from_u64(26);
    let mut cells = random_cells(&mut rng, CELLS);
    let cmds = vec![RELAY_CMD; CELLS];
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let mut relays = cgo_circuits(&mut rng, n);
                let circ: Vec<usize> = (0..n).collect();
                let v = per_cell(CELLS / n * n, || {
                    timed(|| {
                        for round in cells.chunks_exact_mut(n) {
                            cgo_backward_relay_multi(&mut relays, &circ, &cmds[..n], round);
                        }
                        black_box(&mut cells);
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

fn cgo_originate() -> Figure {
    let mut rng = StdRng::seed_from_u64(23);
    let mut relays = cgo_circuits(&mut rng, 1);
    let mut cells = random_cells(&mut rng, CELLS);
    Figure::One(per_cell(CELLS, || {
        timed(|| {
            for c in cells.iter_mut() {
                black_box(relays[0].originate(RELAY_CMD, c));
            }
        })
    }))
}

fn cgo_originate_batched() -> Figure {
    let mut rng = StdRng::seed_from_u64(24);
    let mut cells = random_cells(&mut rng, CELLS);
    let cmds = vec![RELAY_CMD; CELLS];
    Figure::Per(
        BATCHES
            .iter()
            .map(|&n| {
                let mut relays = cgo_circuits(&mut rng, n);
                let circ: Vec<usize> = (0..n).collect();
                let v = per_cell(CELLS / n * n, || {
                    timed(|| {
                        for round in cells.chunks_exact_mut(n) {
                            cgo_originate_multi(&mut relays, &circ, &cmds[..n], round, None);
                        }
                    })
                });
                (n.to_string(), v)
            })
            .collect(),
    )
}

/// The measurement behind the start-up choice of SHA-1 strategy: one full group of lanes
/// (or one stream for SHA-NI / portable) absorbing a cell and finalizing a copy.
fn sha1_strategies() -> Figure {
    let mut rng = StdRng::seed_from_u64(8);
    let cells = random_cells(&mut rng, 256);
    let features = CpuFeatures::detect_cached();
    let mut lanes = Sha1Lanes::new();
    let mut out = Vec::new();
    let mut variants: Vec<(Sha1MultiImpl, usize, &str)> = Vec::new();
    for imp in features.sha1_multi_impls() {
        match imp {
            Sha1MultiImpl::OneByOne(Sha1Impl::Portable) => variants.push((imp, 16, "portable")),
            Sha1MultiImpl::OneByOne(Sha1Impl::ShaNi) => variants.push((imp, 16, "sha_ni")),
            Sha1MultiImpl::Avx2x8 => variants.push((imp, 8, "avx2_x8")),
            Sha1MultiImpl::Avx512x16 => {
                variants.push((imp, 16, "avx512_x16"));
                // Groups of at most eight circuits run the 256-bit AVX-512VL kernel; with four
                // filled lanes this is the break-even point against SHA-NI.
                variants.push((imp, 8, "avx512vl_x8"));
                variants.push((imp, 4, "avx512vl_x8_4_filled"));
            }
        }
    }
    for (imp, width, name) in variants {
        let mut states: Vec<Sha1State> = (0..width)
            .map(|i| {
                let mut s = Sha1State::new();
                s.update(&cells[i][..20 + i], Sha1Impl::Portable);
                s
            })
            .collect();
        let rounds = CELLS / width;
        let v = per_cell(rounds * width, || {
            timed(|| {
                for r in 0..rounds {
                    lanes.clear();
                    for (i, s) in states.iter().enumerate() {
                        lanes.push(s, &cells[(r + i) % cells.len()]);
                    }
                    lanes.run(imp);
                    for (i, s) in states.iter_mut().enumerate() {
                        lanes.commit(i, s);
                    }
                    black_box(lanes.digest(0));
                }
            })
        });
        out.push((name.to_string(), v));
    }
    Figure::Per(out)
}

/// Each AES-128-CTR implementation this CPU can run, one cell per call.
fn aes_strategies() -> Figure {
    let mut rng = StdRng::seed_from_u64(9);
    let mut cells = random_cells(&mut rng, CELLS);
    let mut out = Vec::new();
    for imp in CpuFeatures::detect_cached().aes_impls() {
        let mut ctr = Aes128Ctr::new(&[0x42; 16], imp);
        let v = per_cell(CELLS, || {
            timed(|| {
                for c in cells.iter_mut() {
                    ctr.apply_keystream(black_box(c));
                }
            })
        });
        out.push((imp.name().to_string(), v));
    }
    Figure::Per(out)
}

/// The `openssl` command-line tool, found on `PATH`.
const OPENSSL: &str = "openssl";

/// `openssl version`'s line, or why it could not be run.
fn openssl_version() -> String {
    match std::process::Command::new(OPENSSL).arg("version").output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).trim().to_string(),
        Ok(o) => format!("unavailable: `openssl version` exited with {}", o.status),
        Err(e) => format!("unavailable: cannot run `{OPENSSL}`: {e}"),
    }
}

/// OpenSSL's own cost for the work a cell costs Fors, measured now on the same machine (the
/// linked library is not used: no openssl crate in the build). One EVP stream encrypting or
/// hashing 509-byte buffers back to back; `openssl speed` reports user CPU time.
fn openssl_509() -> Figure {
    let mut out = Vec::new();
    for (name, alg) in [("aes_128_ctr", "aes-128-ctr"), ("sha1", "sha1")] {
        match openssl_speed(alg, CELL_BODY_LEN) {
            Ok(ns) => out.push((name.to_string(), ns)),
            Err(why) => return Figure::Unavailable(why),
        }
    }
    Figure::Per(out)
}

/// Runs `openssl speed -mr -evp ALG -bytes LEN -seconds 1`; nanoseconds per operation.
fn openssl_speed(alg: &str, len: usize) -> Result<f64, String> {
    let args = [
        "speed",
        "-mr",
        "-evp",
        alg,
        "-bytes",
        &len.to_string(),
        "-seconds",
        "1",
    ];
    let o = std::process::Command::new(OPENSSL)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{OPENSSL}`: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "`{OPENSSL} {}` exited with {}: {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    parse_openssl_speed(&String::from_utf8_lossy(&o.stdout), len).ok_or_else(|| {
        format!("no +F result for {alg} at {len} bytes in `openssl speed -mr` output")
    })
}

/// Nanoseconds per `len`-byte operation from `openssl speed -mr` output: the `+H:` line lists
/// the sizes, the `+F:IDX:NAME:RATE...` line one rate in bytes per second per size.
fn parse_openssl_speed(out: &str, len: usize) -> Option<f64> {
    let sizes: Vec<usize> = out
        .lines()
        .find_map(|l| l.strip_prefix("+H:"))?
        .split(':')
        .map(|s| s.trim().parse().ok())
        .collect::<Option<_>>()?;
    let col = sizes.iter().position(|&s| s == len)?;
    let rates = out.lines().find_map(|l| l.strip_prefix("+F:"))?;
    // IDX and NAME come first; the name has no ':' in it.
    let rate: f64 = rates.split(':').nth(2 + col)?.trim().parse().ok()?;
    (rate > 0.0 && rate.is_finite()).then(|| len as f64 * 1e9 / rate)
}

/// Server handshakes timed per call over this many fresh client onionskins.
const HANDSHAKES: usize = 400;

/// Median of per-call microseconds.
fn median_us(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn ntor_key_map(rng: &mut StdRng) -> NtorKeyMap {
    NtorKeyMap::new(NtorKeyPair::generate(rng), Some(NtorKeyPair::generate(rng)))
}

/// The relay's side of ntor: what each CREATE2 costs a shard. Client onionskins are made
/// beforehand and not timed.
fn ntor_server() -> Figure {
    let mut rng = StdRng::seed_from_u64(11);
    let map = ntor_key_map(&mut rng);
    let id = RsaIdentity([7; 20]);
    let skins: Vec<_> = (0..HANDSHAKES)
        .map(|_| NtorClient::start(&mut rng, &id, map.current().public()).1)
        .collect();
    let samples = skins
        .iter()
        .map(|s| {
            let t = Instant::now();
            let r = ntor::server_handshake(&mut rng, &map, &id, s);
            let us = t.elapsed().as_secs_f64() * 1e6;
            assert!(r.is_ok(), "ntor server handshake failed in the benchmark");
            black_box(r.ok());
            us
        })
        .collect();
    Figure::One(median_us(samples))
}

/// The relay's side of ntor-v3 with a CC request negotiated by the server policy.
fn ntor_v3_server() -> Figure {
    let mut rng = StdRng::seed_from_u64(12);
    let map = ntor_key_map(&mut rng);
    let id = Ed25519Identity([9; 32]);
    let policy = NtorV3ServerPolicy::default();
    let skins: Vec<_> = (0..HANDSHAKES)
        .filter_map(|_| {
            NtorV3Client::start(
                &mut rng,
                &id,
                map.current().public(),
                &[CircuitExtension::CcRequest],
            )
            .ok()
            .map(|(_, skin)| skin)
        })
        .collect();
    let samples = skins
        .iter()
        .map(|s| {
            let t = Instant::now();
            let r = ntor_v3::server_handshake(&mut rng, &map, &id, s, |e| {
                negotiate_circ_params(e, &policy)
            });
            let us = t.elapsed().as_secs_f64() * 1e6;
            assert!(
                r.is_ok(),
                "ntor-v3 server handshake failed in the benchmark"
            );
            black_box(r.ok());
            us
        })
        .collect();
    Figure::One(median_us(samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Output of `openssl speed -mr -evp aes-128-ctr -bytes 509 -seconds 1` (OpenSSL 3.0.19).
    const AES_509: &str = "+DT:AES-128-CTR:1:509\n+R:10609432:AES-128-CTR:1.000000\n+H:509\n+F:25:AES-128-CTR:5400200888.00\n";

    #[test]
    fn parses_openssl_speed_mr() {
        let ns = parse_openssl_speed(AES_509, 509).expect("parsed");
        // 509 bytes at 5400200888 B/s.
        assert!((ns - 94.256).abs() < 0.01, "{ns}");
        let two = "+H:16:509\n+F:3:sha1:100000000.00:1018000000.00\n";
        assert_eq!(parse_openssl_speed(two, 509), Some(500.0));
        assert_eq!(parse_openssl_speed(two, 64), None);
        assert_eq!(parse_openssl_speed("garbage", 509), None);
        assert_eq!(parse_openssl_speed("+H:509\n+F:1:x:0.00\n", 509), None);
    }

    #[test]
    fn ratios_need_both_sides() {
        let ours = (
            "aes_ctr_cell_ns",
            Figure::Per(vec![("vaes256".into(), 30.0)]),
        );
        assert!(vs_openssl(&[ours]).is_empty());
        let ours = (
            "aes_ctr_cell_ns",
            Figure::Per(vec![("vaes256".into(), 30.0)]),
        );
        let theirs = (
            "openssl_509_ns",
            Figure::Per(vec![("aes_128_ctr".into(), 60.0), ("sha1".into(), 400.0)]),
        );
        let vs = vs_openssl(&[ours, theirs]);
        assert_eq!(
            vs,
            vec![("aes_ctr_cell", vec![("vaes256".to_string(), 0.5)])]
        );
        let gone = ("openssl_509_ns", Figure::Unavailable("no openssl".into()));
        assert!(vs_openssl(&[gone]).is_empty());
    }
}
