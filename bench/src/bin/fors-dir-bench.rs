//! `fors-dir-bench`: directory requests against one directory cache, over its DirPort or
//! tunnelled (BEGIN_DIR on a one-hop CREATE_FAST circuit, as a Tor client fetches its
//! directory), for `scripts/bench/dircache.py` (results in `bench/RESULTS.md`).
//!
//! ```text
//! fors-dir-bench --dirport 127.0.0.1:P | --orport 127.0.0.1:P
//!     --request 'URL[|Header: value]...'   # repeatable; requests cycle through them
//!     [--requests 2000] [--duration 20] [--concurrency 4] [--save DIR] [--timeout 30]
//! ```
//!
//! Every answer is read to its end and checked: status 200, a body that decodes by its
//! `Content-Encoding` (identity or deflate). Per request kind it reports how many answers
//! had which SHA-256 of the decoded body, so two caches' answers can be compared; `--save`
//! writes the first decoded body of each kind to `DIR/<index>.body`. Bounded: at most
//! `--requests` requests and `--duration` seconds (then no new request starts), each
//! request at most `--timeout` seconds. Only 127.0.0.0/8 or ::1 is accepted as a server.
//! One JSON object on stdout; exit status 0 only if every request succeeded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fors::cell::relay::msg::RelayMsg;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors_testkit::circuit::{msg, ClientCircuit, Handshake};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

#[allow(dead_code)]
#[path = "../../../tests/daemon_common/raw_link.rs"]
mod raw_link;
use raw_link::{fixed_cell, LinkRead, RawLink};

/// tor-spec "Flow control": windows and increments a client keeps for what it receives.
const CIRC_SENDME_EVERY: u32 = 100;
const STREAM_SENDME_EVERY: u32 = 50;

#[derive(Clone, Copy)]
enum Target {
    DirPort(SocketAddr),
    OrPort(SocketAddr),
}

struct Opts {
    target: Target,
    requests: Vec<(String, Vec<String>)>,
    max_requests: u64,
    duration: Duration,
    concurrency: usize,
    timeout: Duration,
    save: Option<std::path::PathBuf>,
    seed: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("fors-dir-bench: {msg}");
    eprintln!(
        "usage: fors-dir-bench (--dirport ADDR | --orport ADDR) --request 'URL[|H: v]'... \
         [--requests N] [--duration S] [--concurrency C] [--timeout S] [--save DIR] [--seed N]"
    );
    std::process::exit(2);
}

fn loopback(s: &str, opt: &str) -> SocketAddr {
    let a: SocketAddr = s
        .parse()
        .unwrap_or_else(|_| usage(&format!("{opt} {s}: not IP:PORT")));
    if !a.ip().is_loopback() {
        usage(&format!("{opt} {s}: only loopback servers are allowed"));
    }
    a
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut target = None;
    let mut requests = Vec::new();
    let (mut max_requests, mut duration, mut concurrency, mut timeout) = (2000u64, 20u64, 4, 30);
    let mut save = None;
    let mut seed = None;
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{a} needs a value")))
        };
        let num = |v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| usage(&format!("{a} {v}: not a number")))
        };
        match a.as_str() {
            "--dirport" => target = Some(Target::DirPort(loopback(&val(), "--dirport"))),
            "--orport" => target = Some(Target::OrPort(loopback(&val(), "--orport"))),
            "--request" => {
                let v = val();
                let mut parts = v.split('|').map(str::to_owned);
                let url = parts.next().unwrap_or_default();
                if !url.starts_with('/') {
                    usage(&format!("--request {v}: the URL must start with /"));
                }
                requests.push((url, parts.collect()));
            }
            "--requests" => max_requests = num(val()),
            "--duration" => duration = num(val()),
            "--concurrency" => concurrency = num(val()).clamp(1, 64) as usize,
            "--timeout" => timeout = num(val()),
            "--save" => save = Some(std::path::PathBuf::from(val())),
            "--seed" => seed = Some(num(val())),
            _ => usage(&format!("unknown option {a}")),
        }
    }
    let target = target.unwrap_or_else(|| usage("--dirport or --orport is required"));
    if requests.is_empty() {
        usage("at least one --request");
    }
    Opts {
        target,
        requests,
        max_requests,
        duration: Duration::from_secs(duration),
        concurrency,
        timeout: Duration::from_secs(timeout.max(1)),
        save,
        seed: seed.unwrap_or_else(rand::random),
    }
}

/// What one request kind produced, over all threads.
#[derive(Default)]
struct KindStats {
    ok: u64,
    digests: BTreeMap<String, u64>,
    encodings: BTreeMap<String, u64>,
    decoded_bytes: u64,
    /// Answers that are consensus diffs (dir-spec "consensus diffs").
    diffs: u64,
    saved: bool,
}

#[derive(Default)]
struct Totals {
    kinds: Vec<KindStats>,
    errors: BTreeMap<String, u64>,
}

fn http_request(url: &str, headers: &[String]) -> Vec<u8> {
    let mut r = format!("GET {url} HTTP/1.0\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Checks an answer; its content encoding and decoded body.
fn decode(answer: &[u8]) -> Result<(String, Vec<u8>), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no_header_end")?;
    let head = std::str::from_utf8(&answer[..split]).map_err(|_| "head_not_utf8")?;
    let body = &answer[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    if !status.starts_with("HTTP/1.0 200 ") {
        let code = status.split(' ').nth(1).unwrap_or("none");
        return Err(format!("status_{code}"));
    }
    let mut enc = "identity".to_owned();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-encoding") {
                enc = v.trim().to_owned();
            }
        }
    }
    let decoded = match enc.as_str() {
        "identity" => body.to_vec(),
        "deflate" => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(body)
                .read_to_end(&mut out)
                .map_err(|_| "bad_deflate")?;
            out
        }
        other => return Err(format!("encoding_{other}")),
    };
    Ok((enc, decoded))
}

/// The body as compared between caches: microdescriptors by digest come in an order each
/// cache chooses (dir-spec §5.2 does not fix it), so they are compared as a sorted set.
fn canonical(url: &str, body: &[u8]) -> Vec<u8> {
    if !url.starts_with("/tor/micro/d/") {
        return body.to_vec();
    }
    let text = String::from_utf8_lossy(body);
    // Each microdescriptor starts with an `onion-key` line.
    let mut starts: Vec<usize> = text
        .match_indices("onion-key")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
        .collect();
    if starts.first() != Some(&0) {
        starts.insert(0, 0);
    }
    let ends = starts.iter().skip(1).copied().chain([text.len()]);
    let mut docs: Vec<&str> = starts.iter().zip(ends).map(|(&a, b)| &text[a..b]).collect();
    docs.sort_unstable();
    docs.concat().into_bytes()
}

fn dirport_fetch(addr: SocketAddr, req: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|_| "connect")?;
    s.set_read_timeout(Some(timeout)).map_err(|_| "socket")?;
    s.set_write_timeout(Some(timeout)).map_err(|_| "socket")?;
    s.write_all(req).map_err(|_| "write")?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|_| "read")?;
    Ok(out)
}

/// A one-hop circuit for tunnelled requests, one stream after another.
struct Tunnel {
    link: RawLink,
    circ: ClientCircuit,
    id: u32,
    next_stream: u16,
    /// DATA cells received on the circuit since the last circuit SENDME.
    circ_cells: u32,
    rng: StdRng,
}

impl Tunnel {
    fn open(addr: SocketAddr, timeout: Duration, seed: u64) -> Result<Tunnel, String> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut link = RawLink::open_as_client(addr, timeout)?;
        let id = 0x8000_0001u32;
        let mut circ = ClientCircuit::new(CircId(id));
        let (cmd, body) = circ
            .create(&mut rng, &Handshake::Fast)
            .map_err(|e| format!("create: {e:?}"))?;
        if !link.send(&fixed_cell(id, cmd, &body)) {
            return Err("link_send".into());
        }
        let end = Instant::now() + timeout;
        loop {
            match link.read_cell(end.saturating_duration_since(Instant::now())) {
                LinkRead::Cell { cmd, .. }
                    if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING => {}
                LinkRead::Cell { cmd, body, .. } if cmd == ChanCmd::CREATED_FAST => {
                    circ.created(cmd, &body)
                        .map_err(|e| format!("created: {e:?}"))?;
                    break;
                }
                other => return Err(format!("no CREATED_FAST: {other:?}")),
            }
        }
        Ok(Tunnel {
            link,
            circ,
            id,
            next_stream: 1,
            circ_cells: 0,
            rng,
        })
    }

    fn send(&mut self, m: &RelayMsg<'_>, sid: u16) -> Result<(), String> {
        let (body, _) = self
            .circ
            .relay_cell(&mut self.rng, 0, m, sid)
            .map_err(|e| format!("relay_cell: {e:?}"))?;
        if self.link.send(&fixed_cell(self.id, ChanCmd::RELAY, &body)) {
            Ok(())
        } else {
            Err("link_send".into())
        }
    }

    /// BEGIN_DIR, the request, and everything until END.
    fn fetch(&mut self, req: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        let sid = self.next_stream;
        self.next_stream = self.next_stream.checked_add(1).unwrap_or(1).max(1);
        self.send(&RelayMsg::BeginDir, sid)?;
        let mut sent = false;
        let mut out = Vec::new();
        let mut stream_cells = 0u32;
        let end = Instant::now() + timeout;
        loop {
            let body = match self
                .link
                .read_cell(end.saturating_duration_since(Instant::now()))
            {
                LinkRead::Cell { cmd, .. }
                    if cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING =>
                {
                    continue
                }
                LinkRead::Cell { cmd, body, .. } if cmd == ChanCmd::RELAY => body,
                LinkRead::Cell { cmd, .. } => return Err(format!("cell_{cmd:?}")),
                LinkRead::Closed(_) => return Err("link_closed".into()),
                LinkRead::TimedOut => return Err("timeout".into()),
            };
            let mut body: [u8; CELL_BODY_LEN] = body.try_into().map_err(|_| "cell_len")?;
            let r = self
                .circ
                .open(&mut body)
                .map_err(|e| format!("open: {e:?}"))?;
            if r.stream_id != sid && r.stream_id != 0 {
                continue; // an earlier stream's late cell
            }
            match r.cmd {
                RelayCmd::CONNECTED if !sent => {
                    let req = req.to_vec();
                    for chunk in req.chunks(498) {
                        self.send(&msg::data(chunk), sid)?;
                    }
                    sent = true;
                }
                RelayCmd::DATA => {
                    out.extend_from_slice(r.data);
                    self.circ_cells += 1;
                    stream_cells += 1;
                    if self.circ_cells == CIRC_SENDME_EVERY {
                        self.circ_cells = 0;
                        let tag = self.circ.last_tag(0).ok_or("no_tag")?;
                        self.send(&msg::sendme_v1(&tag), 0)?;
                    }
                    if stream_cells.is_multiple_of(STREAM_SENDME_EVERY) {
                        self.send(&msg::sendme(), sid)?;
                    }
                }
                RelayCmd::END if sent => return Ok(out),
                RelayCmd::END => return Err("end_before_connected".into()),
                RelayCmd::SENDME => {}
                other => return Err(format!("relay_{other:?}")),
            }
        }
    }
}

fn main() {
    let o = Arc::new(parse_opts());
    eprintln!("fors-dir-bench: seed {}", o.seed);
    let totals = Arc::new(Mutex::new(Totals {
        kinds: (0..o.requests.len())
            .map(|_| KindStats::default())
            .collect(),
        errors: BTreeMap::new(),
    }));
    let issued = Arc::new(AtomicU64::new(0));
    let wire_bytes = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + o.duration;
    let threads: Vec<_> = (0..o.concurrency)
        .map(|t| {
            let (o, totals, issued, wire_bytes) = (
                o.clone(),
                totals.clone(),
                issued.clone(),
                wire_bytes.clone(),
            );
            std::thread::spawn(move || {
                let mut tunnel: Option<Tunnel> = None;
                let reqs: Vec<Vec<u8>> =
                    o.requests.iter().map(|(u, h)| http_request(u, h)).collect();
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= o.max_requests || Instant::now() >= deadline {
                        break;
                    }
                    let k = (n as usize) % reqs.len();
                    let got = match o.target {
                        Target::DirPort(a) => dirport_fetch(a, &reqs[k], o.timeout),
                        Target::OrPort(a) => {
                            if tunnel.is_none() {
                                match Tunnel::open(a, o.timeout, o.seed ^ t as u64) {
                                    Ok(tn) => tunnel = Some(tn),
                                    Err(e) => {
                                        eprintln!("tunnel: {e}");
                                        let mut tt = totals.lock().unwrap();
                                        *tt.errors.entry("tunnel_open".into()).or_default() += 1;
                                        std::thread::sleep(Duration::from_millis(200));
                                        continue;
                                    }
                                }
                            }
                            let r = tunnel.as_mut().unwrap().fetch(&reqs[k], o.timeout);
                            if r.is_err() {
                                tunnel = None; // a fresh circuit for the next request
                            }
                            r
                        }
                    };
                    let checked = got.and_then(|a| {
                        wire_bytes.fetch_add(a.len() as u64, Ordering::Relaxed);
                        decode(&a)
                    });
                    let mut tt = totals.lock().unwrap();
                    match checked {
                        Ok((enc, body)) => {
                            let ks = &mut tt.kinds[k];
                            ks.ok += 1;
                            ks.decoded_bytes += body.len() as u64;
                            if body.starts_with(b"network-status-diff-version ") {
                                ks.diffs += 1;
                            }
                            let d: String = Sha256::digest(canonical(&o.requests[k].0, &body))
                                .iter()
                                .map(|b| format!("{b:02x}"))
                                .collect();
                            *ks.digests.entry(d).or_default() += 1;
                            *ks.encodings.entry(enc).or_default() += 1;
                            if let (Some(dir), false) = (&o.save, ks.saved) {
                                ks.saved = true;
                                let _ = std::fs::write(dir.join(format!("{k}.body")), &body);
                            }
                        }
                        Err(e) => *tt.errors.entry(e).or_default() += 1,
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let tt = totals.lock().unwrap();
    let ok: u64 = tt.kinds.iter().map(|k| k.ok).sum();
    let errors: u64 = tt.errors.values().sum();
    let kinds: Vec<serde_json::Value> = o
        .requests
        .iter()
        .zip(&tt.kinds)
        .map(|((url, h), k)| {
            serde_json::json!({
                "url": url, "headers": h, "ok": k.ok, "digests": k.digests,
                "encodings": k.encodings, "decoded_bytes": k.decoded_bytes, "diffs": k.diffs,
            })
        })
        .collect();
    let report = serde_json::json!({
        "transport": match o.target { Target::DirPort(_) => "dirport", Target::OrPort(_) => "begin_dir" },
        "seed": o.seed,
        "concurrency": o.concurrency,
        "requests_ok": ok,
        "errors": errors,
        "error_kinds": tt.errors,
        "wire_bytes": wire_bytes.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
        "requests_per_s": ok as f64 / elapsed.max(1e-9),
        "kinds": kinds,
    });
    println!("{report}");
    std::process::exit(if errors == 0 && ok > 0 { 0 } else { 1 });
}
