//! `fors-hs-bench`: introductions and rendezvous splices through one relay under test R (an
//! introduction and rendezvous point), for `scripts/bench/hs.py` (results in
//! `bench/RESULTS.md`, "Onion-service roles").
//!
//! ```text
//! fors-hs-bench --network run/net/network.json --relay NICK --first-hop NICK
//!     --workload intro|rend|extend [--workers 4] [--services 2] [--count 2000]
//!     [--duration 20] [--splice-cells 8] [--timeout 20] [--relay-pid PID] [--seed N]
//! ```
//!
//! Each worker thread holds two TLS links: one to the first hop F (a relay: C tor refuses
//! INTRODUCE1 on a circuit whose previous hop is a client, `circuit_is_suitable_for_
//! introduce1`, so client circuits reach R through F as real clients' do) and one straight
//! to R (the services' side). Client circuits are CREATE_FAST to F (cheap for F, which is
//! not measured) and EXTEND2 with ntor to R.
//!
//! * `intro`: before timing, each worker builds `--services` one-hop ntor circuits to R and
//!   sends each an ESTABLISH_INTRO (fresh ed25519 auth key, the MAC keyed with the circuit's
//!   KH, the signature), waiting for INTRO_ESTABLISHED. Then, per introduction: a client
//!   circuit F→R, one INTRODUCE1 naming one of the worker's services, INTRODUCE_ACK must say
//!   SUCCESS, and the service's circuit must get INTRODUCE2 with the INTRODUCE1 bytes; then
//!   the client circuit is destroyed (C tor allows one INTRODUCE1 per circuit).
//! * `rend`: per join: a client circuit F→R, ESTABLISH_RENDEZVOUS with a random cookie,
//!   RENDEZVOUS_ESTABLISHED; a one-hop ntor service circuit to R, RENDEZVOUS1 with the
//!   cookie; RENDEZVOUS2 on the client circuit with the service's bytes. Then
//!   `--splice-cells` DROP cells each way through an end-to-end hop R does not hold
//!   (payload checked at the far end), and both circuits are destroyed.
//! * `extend`: the client circuit F→R alone (built, then destroyed): the circuit cost that
//!   every introduction and join includes, to read the others against.
//!
//! Bounded: at most `--count` operations and `--duration` seconds (then no new one starts),
//! each step at most `--timeout` seconds. Only loopback relays (network.json is checked).
//! With `--relay-pid`, R's utime+stime over the timed part (after every worker's setup) is
//! reported. One JSON object on stdout; exit status 0 only if every operation succeeded.

#[allow(dead_code)]
#[path = "../cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "../hsbench.rs"]
mod hsbench;
#[allow(dead_code)]
#[path = "../path.rs"]
mod path;
#[allow(dead_code)]
#[path = "../../../tests/daemon_common/raw_link.rs"]
mod raw_link;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use fors::cell::chan::{Destroy, DestroyReason};
use fors::cell::relay::msg::RelayMsg;
use fors::cell::relay::RelayCmd;
use fors::cell::{ChanCmd, CircId, CELL_BODY_LEN};
use fors::proto::hs::cells::{parse_intro_established, AckStatus, IntroduceAck};
use fors_testkit::circuit::{msg, ClientCircuit, ClientLayers, Handshake};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use path::{Network, Relay};
use raw_link::{fixed_cell, LinkRead, RawLink};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Workload {
    Intro,
    Rend,
    Extend,
}

struct Opts {
    network: std::path::PathBuf,
    relay: String,
    first_hop: String,
    workload: Workload,
    workers: usize,
    services: usize,
    count: u64,
    duration: Duration,
    splice_cells: u64,
    timeout: Duration,
    relay_pid: Option<u32>,
    seed: u64,
}

fn usage(msg: &str) -> ! {
    eprintln!("fors-hs-bench: {msg}");
    eprintln!(
        "usage: fors-hs-bench --network FILE --relay NICK --first-hop NICK \
         --workload intro|rend|extend [--workers W] [--services S] [--count N] \
         [--duration SECS] [--splice-cells K] [--timeout SECS] [--relay-pid PID] [--seed N]"
    );
    std::process::exit(2);
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let (mut network, mut relay, mut first_hop, mut workload) = (None, None, None, None);
    let (mut workers, mut services, mut count, mut duration) = (4usize, 2usize, 2000u64, 20u64);
    let (mut splice_cells, mut timeout, mut relay_pid, mut seed) = (8u64, 20u64, None, None);
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
            "--network" => network = Some(std::path::PathBuf::from(val())),
            "--relay" => relay = Some(val()),
            "--first-hop" => first_hop = Some(val()),
            "--workload" => {
                workload = Some(match val().as_str() {
                    "intro" => Workload::Intro,
                    "rend" => Workload::Rend,
                    "extend" => Workload::Extend,
                    w => usage(&format!("--workload {w}: intro, rend or extend")),
                })
            }
            "--workers" => workers = num(val()).clamp(1, 64) as usize,
            "--services" => services = num(val()).clamp(1, 64) as usize,
            "--count" => count = num(val()),
            "--duration" => duration = num(val()).clamp(1, 3600),
            // DROP cells each way per join; bounded so a run stays a benchmark, not a flood.
            "--splice-cells" => splice_cells = num(val()).min(1000),
            "--timeout" => timeout = num(val()).clamp(1, 600),
            "--relay-pid" => relay_pid = Some(num(val()) as u32),
            "--seed" => seed = Some(num(val())),
            "--help" | "-h" => usage("help"),
            _ => usage(&format!("unknown option {a}")),
        }
    }
    Opts {
        network: network.unwrap_or_else(|| usage("--network is required")),
        relay: relay.unwrap_or_else(|| usage("--relay is required")),
        first_hop: first_hop.unwrap_or_else(|| usage("--first-hop is required")),
        workload: workload.unwrap_or_else(|| usage("--workload is required")),
        workers,
        services,
        count,
        duration: Duration::from_secs(duration),
        splice_cells,
        timeout: Duration::from_secs(timeout),
        relay_pid,
        seed: seed.unwrap_or_else(rand::random),
    }
}

/// utime+stime of every thread of `pid`, in seconds (proc(5) fields 14 and 15, counted
/// after the last ')' because the command name may hold spaces).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let tail: Vec<&str> = s[s.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = tail.get(11)?.parse::<u64>().ok()? + tail.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// A client link to `r` with TCP_NODELAY, as relays set it: a lone cell that gets no answer
/// (a DESTROY) must not hold the next one back for a delayed ACK (Nagle).
fn link(r: &Relay, limit: Duration) -> Step<RawLink> {
    let addr = SocketAddr::V4(r.addr);
    let tcp = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    RawLink::over_tcp(tcp, limit)?.client_handshake(addr.ip(), limit)
}

/// A circuit and the link it lives on (by index: 0 = to the first hop, 1 = to R).
struct Circ {
    circ: ClientCircuit,
    link: usize,
}

/// One worker's two links, circuit ID allocation and randomness.
struct Worker<'a> {
    o: &'a Opts,
    relay: &'a Relay,
    links: [RawLink; 2],
    next_id: u32,
    rng: StdRng,
    /// Cells for circuits this worker already destroyed, or PADDING (not errors).
    skipped: u64,
}

type Step<T> = Result<T, String>;

const TO_FIRST: usize = 0;
const TO_RELAY: usize = 1;

impl<'a> Worker<'a> {
    fn open(o: &'a Opts, first: &'a Relay, relay: &'a Relay, seed: u64) -> Step<Worker<'a>> {
        let l0 = link(first, o.timeout).map_err(|e| format!("link to the first hop: {e}"))?;
        let l1 = link(relay, o.timeout).map_err(|e| format!("link to the relay: {e}"))?;
        Ok(Worker {
            o,
            relay,
            links: [l0, l1],
            next_id: 1,
            rng: StdRng::seed_from_u64(seed),
            skipped: 0,
        })
    }

    fn new_id(&mut self) -> CircId {
        // tor-spec §"Link protocol versions": on link protocol 4+ the initiator's circuit
        // IDs have the high bit set.
        let id = 0x8000_0000 | (self.next_id & 0x7fff_ffff);
        self.next_id = self.next_id.wrapping_add(1).max(1);
        CircId(id)
    }

    fn send(&mut self, link: usize, id: CircId, cmd: ChanCmd, body: &[u8]) -> Step<()> {
        if self.links[link].send(&fixed_cell(id.0, cmd, body)) {
            Ok(())
        } else {
            Err("link_send".into())
        }
    }

    /// The next cell for circuit `id` on `link`; cells of other circuits (late ones of
    /// circuits already destroyed) and link padding are skipped. A DESTROY is an error.
    fn wait(&mut self, link: usize, id: CircId) -> Step<(ChanCmd, Vec<u8>)> {
        let end = Instant::now() + self.o.timeout;
        loop {
            match self.links[link].read_cell(end.saturating_duration_since(Instant::now())) {
                LinkRead::Cell { circ_id, cmd, body } => {
                    if circ_id != id || cmd == ChanCmd::PADDING || cmd == ChanCmd::VPADDING {
                        self.skipped += 1;
                        continue;
                    }
                    if cmd == ChanCmd::DESTROY {
                        let r = Destroy::parse(&body).map(|d| d.reason);
                        return Err(format!("destroyed_{r:?}"));
                    }
                    return Ok((cmd, body));
                }
                LinkRead::Closed(_) => return Err("link_closed".into()),
                LinkRead::TimedOut => return Err("timeout".into()),
            }
        }
    }

    /// The next relay message on `c` from hop `hop`, as (command, data).
    fn wait_relay(&mut self, c: &mut Circ, hop: usize) -> Step<(RelayCmd, Vec<u8>)> {
        let (cmd, body) = self.wait(c.link, c.circ.id)?;
        if cmd != ChanCmd::RELAY && cmd != ChanCmd::RELAY_EARLY {
            return Err(format!("cell_{cmd:?}"));
        }
        let mut body: [u8; CELL_BODY_LEN] = body.try_into().map_err(|_| "cell_len")?;
        let r = c.circ.open(&mut body).map_err(|_| "unrecognized")?;
        if r.hop != hop {
            return Err(format!("from_hop_{}", r.hop));
        }
        Ok((r.cmd, r.data.to_vec()))
    }

    fn send_relay(&mut self, c: &mut Circ, hop: usize, cmd: RelayCmd, data: &[u8]) -> Step<()> {
        let (body, _) = c
            .circ
            .relay_cell_with(&mut self.rng, hop, cmd, 0, hsbench::write_bytes(data))
            .map_err(|e| format!("relay_cell: {e}"))?;
        self.send(c.link, c.circ.id, ChanCmd::RELAY, &body)
    }

    fn destroy(&mut self, c: &Circ) {
        let mut body = [0u8; CELL_BODY_LEN];
        Destroy {
            reason: DestroyReason::Finished,
        }
        .encode(&mut body);
        let _ = self.send(c.link, c.circ.id, ChanCmd::DESTROY, &body);
    }

    fn ntor(r: &Relay) -> Step<Handshake> {
        Ok(Handshake::Ntor {
            rsa: r.rsa,
            onion: x25519_dalek::PublicKey::from(r.ntor_key.ok_or("no_ntor_key")?),
        })
    }

    /// A client circuit: CREATE_FAST to the first hop, EXTEND2 (ntor) to R.
    fn client_circuit(&mut self) -> Step<Circ> {
        let id = self.new_id();
        let mut c = Circ {
            circ: ClientCircuit::new(id),
            link: TO_FIRST,
        };
        let (cmd, body) = c
            .circ
            .create(&mut self.rng, &Handshake::Fast)
            .map_err(|e| format!("create: {e}"))?;
        self.send(TO_FIRST, id, cmd, &body)?;
        let (cmd, body) = self.wait(TO_FIRST, id)?;
        c.circ
            .created(cmd, &body)
            .map_err(|e| format!("created: {e}"))?;
        let hs = Self::ntor(self.relay)?;
        let specs = msg::link_specs(
            SocketAddr::V4(self.relay.addr),
            &self.relay.rsa,
            self.relay.ed.as_ref(),
        );
        let body = c
            .circ
            .extend(&mut self.rng, &specs, &hs)
            .map_err(|e| format!("extend: {e}"))?;
        // tor-spec §"Extending a circuit": EXTEND2 goes in RELAY_EARLY.
        self.send(TO_FIRST, id, ChanCmd::RELAY_EARLY, &body)?;
        let (cmd, body) = self.wait(TO_FIRST, id)?;
        if cmd != ChanCmd::RELAY {
            return Err(format!("extend_answer_{cmd:?}"));
        }
        let mut body: [u8; CELL_BODY_LEN] = body.try_into().map_err(|_| "cell_len")?;
        let r = c.circ.open(&mut body).map_err(|_| "extend_unrecognized")?;
        match r.msg() {
            Ok(RelayMsg::Extended2(_)) => {}
            Ok(RelayMsg::Truncated(why)) => return Err(format!("truncated_{why:?}")),
            _ => return Err(format!("extend_answer_{:?}", r.cmd)),
        }
        c.circ
            .extended_msg(&r)
            .map_err(|e| format!("extended: {e}"))?;
        Ok(c)
    }

    /// A one-hop ntor circuit straight to R (a service's side); returns it and its KH.
    fn service_circuit(&mut self) -> Step<(Circ, [u8; 20])> {
        let id = self.new_id();
        let hs = Self::ntor(self.relay)?;
        let (kept, body) = hsbench::KeptHandshake::start(&mut self.rng, &hs)?;
        self.send(TO_RELAY, id, ChanCmd::CREATE2, &body)?;
        let (cmd, body) = self.wait(TO_RELAY, id)?;
        if cmd != ChanCmd::CREATED2 {
            return Err(format!("create_answer_{cmd:?}"));
        }
        let mut circ = ClientCircuit::new(id);
        let kh = kept.finish(&mut circ, &body)?;
        Ok((
            Circ {
                circ,
                link: TO_RELAY,
            },
            kh,
        ))
    }

    /// A service's intro circuit: ESTABLISH_INTRO, INTRO_ESTABLISHED.
    fn establish_intro(&mut self) -> Step<(Circ, SigningKey)> {
        let (mut c, kh) = self.service_circuit()?;
        let sk = SigningKey::from_bytes(&self.rng.gen());
        let cell = hsbench::establish_intro(&sk, &kh).map_err(|e| e.to_string())?;
        self.send_relay(&mut c, 0, RelayCmd::ESTABLISH_INTRO, &cell)?;
        let (cmd, data) = self.wait_relay(&mut c, 0)?;
        if cmd != RelayCmd::INTRO_ESTABLISHED || parse_intro_established(&data).is_err() {
            return Err(format!("establish_intro_answer_{cmd:?}"));
        }
        Ok((c, sk))
    }

    /// One introduction to `svc`; Ok only with ACK SUCCESS and the INTRODUCE2 bytes right.
    fn introduce(&mut self, svc: &mut Circ, key: &[u8; 32]) -> Step<()> {
        let mut c = self.client_circuit()?;
        let r = (|| {
            let cell = hsbench::introduce1(key, &mut self.rng).map_err(|e| e.to_string())?;
            self.send_relay(&mut c, 1, RelayCmd::INTRODUCE1, &cell)?;
            let (cmd, data) = self.wait_relay(&mut c, 1)?;
            if cmd != RelayCmd::INTRODUCE_ACK {
                return Err(format!("intro_answer_{cmd:?}"));
            }
            let ack = IntroduceAck::parse(&data).map_err(|_| "ack_malformed")?;
            if ack.status != AckStatus::SUCCESS {
                return Err(format!("ack_status_{}", ack.status.0));
            }
            let (cmd, data) = self.wait_relay(svc, 0)?;
            if cmd != RelayCmd::INTRODUCE2 {
                return Err(format!("service_got_{cmd:?}"));
            }
            if data != cell {
                return Err("introduce2_differs".into());
            }
            Ok(())
        })();
        self.destroy(&c);
        r
    }

    /// One rendezvous: join, `splice_cells` DROP cells each way, both circuits destroyed.
    /// Returns the spliced cells that arrived intact.
    fn rendezvous(&mut self, n: u64) -> Step<u64> {
        let mut client = self.client_circuit()?;
        let mut service = None;
        let r = (|| {
            let cookie = hsbench::cookie(&mut self.rng);
            self.send_relay(&mut client, 1, RelayCmd::ESTABLISH_RENDEZVOUS, &cookie)?;
            let (cmd, _) = self.wait_relay(&mut client, 1)?;
            if cmd != RelayCmd::RENDEZVOUS_ESTABLISHED {
                return Err(format!("establish_rendezvous_answer_{cmd:?}"));
            }
            let (svc, _) = self.service_circuit()?;
            let svc = service.insert(svc);
            let mut info = [0u8; hsbench::REND_HANDSHAKE_INFO_LEN];
            self.rng.fill(&mut info[..]);
            let cell = hsbench::rendezvous1(&cookie, &info).map_err(|e| e.to_string())?;
            self.send_relay(svc, 0, RelayCmd::RENDEZVOUS1, &cell)?;
            let (cmd, data) = self.wait_relay(&mut client, 1)?;
            if cmd != RelayCmd::RENDEZVOUS2 || data != info {
                return Err(format!("rendezvous2_{cmd:?}"));
            }
            let (ck, sk) = hsbench::e2e_keys(&mut self.rng);
            client.circ.layers.push(&ck);
            svc.circ.layers.push(&sk);
            let k = self.o.splice_cells;
            let seed = self.o.seed ^ n.rotate_left(17);
            let len = hsbench::RELAY_DATA_LEN;
            for i in 0..k {
                let p = hsbench::splice_payload(seed, i, len);
                self.send_relay(&mut client, 2, RelayCmd::DROP, &p)?;
            }
            for i in 0..k {
                let (cmd, data) = self.wait_relay(svc, 1)?;
                if cmd != RelayCmd::DROP || data != hsbench::splice_payload(seed, i, len) {
                    return Err("splice_to_service_differs".into());
                }
            }
            for i in 0..k {
                let p = hsbench::splice_payload(seed, k + i, len);
                self.send_relay(svc, 1, RelayCmd::DROP, &p)?;
            }
            for i in 0..k {
                let (cmd, data) = self.wait_relay(&mut client, 2)?;
                if cmd != RelayCmd::DROP || data != hsbench::splice_payload(seed, k + i, len) {
                    return Err("splice_to_client_differs".into());
                }
            }
            Ok(2 * k)
        })();
        self.destroy(&client);
        if let Some(s) = &service {
            self.destroy(s);
        }
        r
    }
}

#[derive(Default)]
struct Totals {
    ok: u64,
    splice_cells: u64,
    errors: BTreeMap<String, u64>,
    setup_errors: BTreeMap<String, u64>,
    latency_sum_s: f64,
    skipped: u64,
}

fn main() {
    let o = parse_opts();
    eprintln!("fors-hs-bench: seed {}", o.seed);
    let net = Network::load(&o.network).unwrap_or_else(|e| usage(&e.to_string()));
    let mut hops = net
        .choose_path(&[o.first_hop.clone(), o.relay.clone()])
        .unwrap_or_else(|e| usage(&e.to_string()));
    path::complete_keys(&mut hops, &net.dir_servers, cli::Reach::Loopback)
        .unwrap_or_else(|e| usage(&e.to_string()));
    let (first, relay) = (hops[0].clone(), hops[1].clone());
    let o = Arc::new(o);
    let totals = Arc::new(Mutex::new(Totals::default()));
    let issued = Arc::new(AtomicU64::new(0));
    // Every worker's setup (links, intro circuits) is done before the clock starts; `go`
    // lets the workers run once the clock and R's CPU reading are taken.
    let ready = Arc::new(Barrier::new(o.workers + 1));
    let go = Arc::new(Barrier::new(o.workers + 1));
    let start_at = Arc::new(Mutex::new(None::<Instant>));
    let threads: Vec<_> = (0..o.workers)
        .map(|t| {
            let (o, totals, issued, ready, go, start_at) = (
                o.clone(),
                totals.clone(),
                issued.clone(),
                ready.clone(),
                go.clone(),
                start_at.clone(),
            );
            let (first, relay) = (first.clone(), relay.clone());
            std::thread::spawn(move || {
                let seed = o.seed ^ (t as u64).wrapping_mul(0x1000_0000_01b3);
                let setup = (|| {
                    let mut w = Worker::open(&o, &first, &relay, seed)?;
                    let mut services = Vec::new();
                    if o.workload == Workload::Intro {
                        for _ in 0..o.services {
                            let (c, sk) = w.establish_intro()?;
                            services.push((c, sk.verifying_key().to_bytes()));
                        }
                    }
                    Ok::<_, String>((w, services))
                })();
                ready.wait();
                go.wait();
                let (mut w, mut services) = match setup {
                    Ok(x) => x,
                    Err(e) => {
                        eprintln!("worker {t}: setup: {e}");
                        *totals.lock().unwrap().setup_errors.entry(e).or_default() += 1;
                        return;
                    }
                };
                let Some(started) = *start_at.lock().unwrap_or_else(|p| p.into_inner()) else {
                    return;
                };
                let deadline = started + o.duration;
                let mut broken = false;
                loop {
                    let n = issued.fetch_add(1, Ordering::Relaxed);
                    if n >= o.count || Instant::now() >= deadline || broken {
                        break;
                    }
                    let t0 = Instant::now();
                    let r = match o.workload {
                        Workload::Intro => {
                            let i = (n as usize) % services.len();
                            let (svc, key) = &mut services[i];
                            let key = *key;
                            w.introduce(svc, &key).map(|_| 0)
                        }
                        Workload::Rend => w.rendezvous(n),
                        Workload::Extend => w.client_circuit().map(|c| {
                            w.destroy(&c);
                            0
                        }),
                    };
                    let mut tt = totals.lock().unwrap();
                    match r {
                        Ok(cells) => {
                            tt.ok += 1;
                            tt.splice_cells += cells;
                            tt.latency_sum_s += t0.elapsed().as_secs_f64();
                        }
                        Err(e) => {
                            // A closed link ends this worker: its services are gone.
                            broken = e == "link_closed" || e == "link_send";
                            *tt.errors.entry(e).or_default() += 1;
                        }
                    }
                }
                totals.lock().unwrap().skipped += w.skipped;
            })
        })
        .collect();
    ready.wait();
    let cpu0 = o.relay_pid.and_then(cpu_seconds);
    let start = Instant::now();
    *start_at.lock().unwrap() = Some(start);
    go.wait();
    for t in threads {
        let _ = t.join();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = match (o.relay_pid.and_then(cpu_seconds), cpu0) {
        (Some(b), Some(a)) => Some(b - a),
        _ => None,
    };
    let tt = totals.lock().unwrap();
    let errors: u64 = tt.errors.values().sum::<u64>() + tt.setup_errors.values().sum::<u64>();
    let per_1000 = |c: f64| {
        if tt.ok > 0 {
            Some(c / tt.ok as f64 * 1000.0)
        } else {
            None
        }
    };
    let report = serde_json::json!({
        "workload": format!("{:?}", o.workload).to_lowercase(),
        "relay": relay.nick,
        "first_hop": first.nick,
        "seed": o.seed,
        "workers": o.workers,
        "services_per_worker": if o.workload == Workload::Intro { o.services } else { 0 },
        "ok": tt.ok,
        "errors": errors,
        "error_kinds": tt.errors,
        "setup_errors": tt.setup_errors,
        "elapsed_s": elapsed,
        "per_s": tt.ok as f64 / elapsed.max(1e-9),
        "mean_latency_ms": if tt.ok > 0 { tt.latency_sum_s / tt.ok as f64 * 1000.0 } else { 0.0 },
        "splice_cells": tt.splice_cells,
        "splice_cells_per_s": tt.splice_cells as f64 / elapsed.max(1e-9),
        "splice_cells_per_join": o.splice_cells * 2,
        "relay_cpu_s": cpu,
        "relay_cpu_s_per_1000": cpu.and_then(per_1000),
        "relay_cpu_per_wall": cpu.map(|c| c / elapsed.max(1e-9)),
        "skipped_cells": tt.skipped,
    });
    println!("{report}");
    std::process::exit(if errors == 0 && tt.ok > 0 { 0 } else { 1 });
}
