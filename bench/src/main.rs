//! fors-loadgen: the bundled Tor load generator (see bench/README.md).
//!
//! It is a Tor client built on Fors's protocol core: a TLS link to the first hop, circuits
//! built with CREATE2/EXTEND2, exit streams to a sink/source server on loopback, every byte
//! checked against a seeded pattern, SENDME v1 flow control. Workers run one per pinned
//! io_uring shard of `fors::shard::Runtime` (see `worker`).

mod circ;
mod cli;
mod idle;
mod merge;
mod path;
mod pattern;
mod report;
mod sink;
mod stats;
mod svg;
mod worker;

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fors::proto::channel::tls;
use fors::shard::{Runtime, RuntimeConfig, ShardConfig, ShardId};

use cli::{CliError, Options, PathSource, Target};
use path::{Network, Relay};
use report::{Sample, Summary};
use stats::{Live, WorkerStats};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("merge") {
        std::process::exit(merge::main(&args[1..]));
    }
    let opts = match cli::parse(&args) {
        Ok(o) => o,
        Err(CliError::Help) => {
            print!("{}", cli::USAGE);
            return;
        }
        Err(e) => {
            eprintln!("fors-loadgen: {e}");
            std::process::exit(2);
        }
    };
    if let Some(addr) = opts.serve {
        std::process::exit(serve(
            addr,
            opts.reach,
            opts.duration.unwrap_or(Duration::from_secs(3600)),
        ));
    }
    match run(&opts) {
        Ok(summary) => {
            if opts.json {
                println!("{}", summary.to_json());
            } else {
                print!("{}", summary.text());
            }
            if let Some(dir) = &opts.svg {
                if let Err(e) = write_svgs(dir, &summary) {
                    eprintln!("fors-loadgen: writing SVGs to {}: {e}", dir.display());
                }
            }
            std::process::exit(if summary.ok() { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("fors-loadgen: {e}");
            std::process::exit(2);
        }
    }
}

/// `--serve`: runs the sink/source server for `limit`, printing its address first.
fn serve(addr: SocketAddrV4, reach: cli::Reach, limit: Duration) -> i32 {
    match sink::SinkServer::start(addr.into(), reach) {
        Ok(s) => {
            println!("listening {}", s.addr());
            let _ = std::io::Write::flush(&mut std::io::stdout());
            std::thread::sleep(limit);
            0
        }
        Err(e) => {
            eprintln!("fors-loadgen: --serve {addr}: {e}");
            2
        }
    }
}

/// Works out the path (fetching ntor keys as needed).
fn resolve_path(opts: &Options) -> Result<(Vec<Relay>, Option<SocketAddrV4>), String> {
    let (mut path, dirs, http) = match &opts.path {
        PathSource::Hops(h) => (
            h.iter().map(Relay::from).collect::<Vec<_>>(),
            opts.dir_server.into_iter().collect::<Vec<_>>(),
            None,
        ),
        PathSource::Network { file, path } => {
            let n = Network::load(file).map_err(|e| e.to_string())?;
            let p = n.choose_path(path).map_err(|e| e.to_string())?;
            let mut dirs = n.dir_servers.clone();
            dirs.extend(opts.dir_server);
            (p, dirs, n.http_server)
        }
    };
    path::complete_keys(&mut path, &dirs, opts.reach).map_err(|e| e.to_string())?;
    Ok((path, http))
}

fn run(opts: &Options) -> Result<Summary, String> {
    let (path, _http) = resolve_path(opts)?;
    // The built-in server lives as long as the run.
    let (server, target) = match &opts.target {
        Target::Builtin => {
            let at = opts
                .sink_listen
                .unwrap_or(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0));
            let s = sink::SinkServer::start(at.into(), opts.reach)
                .map_err(|e| format!("starting the built-in server on {at}: {e}"))?;
            let SocketAddr::V4(a) = s.addr() else {
                return Err("built-in server bound a non-IPv4 address".into());
            };
            (Some(s), a)
        }
        Target::Sink(a) => (None, *a),
        Target::Http(_) => {
            return Err(
                "--target http://... is not supported yet: use the built-in server or a \
                        fors-loadgen sink (HOST:PORT)"
                    .into(),
            )
        }
    };
    let bulk = opts.download.is_some() || opts.upload.is_some();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if opts.threads > 0 {
        opts.threads
    } else if bulk {
        cores.min(opts.circuits as usize)
    } else {
        1
    }
    .max(1);
    let path = Arc::new(path);
    let idle_ctl = opts
        .idle
        .as_ref()
        .map(|_| Arc::new(idle::IdleCtl::default()));
    let live = Arc::new(Live::default());
    let finished = Arc::new(AtomicUsize::new(0));
    let per = |total: u32, i: usize| {
        total / threads as u32 + u32::from((i as u32) < total % threads as u32)
    };
    let mut plans = Vec::with_capacity(threads);
    for i in 0..threads {
        plans.push(worker::WorkerPlan {
            index: i,
            path: path.clone(),
            circuits: if bulk { per(opts.circuits, i) } else { 0 },
            streams: opts.streams,
            download: opts.download,
            upload: opts.upload,
            duration: opts.duration,
            timeout: opts.timeout,
            handshake: opts.handshake,
            relay_crypto: opts.relay_crypto,
            target,
            seed_base: opts.seed,
            rate: opts.rate_mbps.map(|r| r * 1e6 / threads as f64),
            create_rate: opts.create_rate.map(|r| r as f64 / threads as f64),
            idle: opts
                .idle
                .as_ref()
                .zip(idle_ctl.as_ref())
                .map(|(p, ctl)| idle::IdleShared {
                    ctl: ctl.clone(),
                    rate: f64::from(p.rate) / threads as f64,
                    workers: threads,
                }),
        });
    }
    // One shard of Fors's io_uring runtime per worker, pinned, without a listener.
    let tls = tls::client_config(tls::provider())
        .map_err(|e| format!("TLS client configuration: {e}"))?;
    let cfg = RuntimeConfig {
        shard_count: threads,
        pin_threads: true,
        cores: Vec::new(),
        listen: None,
        listen_also: Vec::new(),
        shard: shard_config(),
    };
    let plans = Arc::new(plans);
    let start = Instant::now();
    let rt = {
        let (plans, live, finished) = (plans.clone(), live.clone(), finished.clone());
        Runtime::start(cfg, move |shard: ShardId| {
            worker::Worker::new(
                plans[shard.0].clone(),
                tls.clone(),
                live.clone(),
                finished.clone(),
            )
        })
        .map_err(|e| format!("starting the io_uring workers: {e}"))?
    };
    let running = || finished.load(Ordering::Acquire) < threads;
    let mut idle_incomplete = false;
    let timeline = match (&opts.idle, &idle_ctl) {
        (Some(plan), Some(ctl)) => {
            idle_incomplete = !idle::control(plan, ctl, &running, start);
            // The workers close their links on release; wait for that, bounded.
            let end = Instant::now() + Duration::from_secs(15);
            while running() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            Vec::new()
        }
        _ => progress(
            &running,
            &live,
            start,
            opts.timeout + Duration::from_secs(15),
        ),
    };
    let elapsed_s = start.elapsed().as_secs_f64();
    let mut total = WorkerStats::default();
    let mut workers_cpu_s = 0.0;
    match rt.stop() {
        Ok(reports) => {
            for r in reports {
                total.merge(&r.handler.stats);
                workers_cpu_s += r.handler.cpu_s;
            }
        }
        Err(e) => total.error(&format!("worker: {e}")),
    }
    if idle_incomplete {
        total.error("idle_stage_not_reached");
    }
    let sink_cpu_s = server.as_ref().map(|s| s.cpu_seconds());
    drop(server);
    Ok(Summary {
        stats: total,
        elapsed_s,
        cpu_s: stats::process_cpu_seconds(),
        workers_cpu_s,
        sink_cpu_s,
        timeline,
        path: path.iter().map(|r| r.nick.clone()).collect(),
    })
}

/// Shard sizing for a client: one connection per worker, a send pool deep enough for a few
/// hundred KiB of cells in flight, and a 5 ms tick for the rate bucket and the flood schedule.
fn shard_config() -> ShardConfig {
    ShardConfig {
        max_connections: 16,
        send_buf_count: 256,
        max_send_bufs_per_conn: 32,
        recv_buf_count: 64,
        recv_buf_size: 64 * 1024,
        tick_ms: 5,
        ..ShardConfig::default()
    }
}

/// Prints a progress line once a second until every worker is done (bounded by `limit`);
/// returns the samples.
fn progress(
    running: &dyn Fn() -> bool,
    live: &Live,
    start: Instant,
    limit: Duration,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let (mut last_bytes, mut last_cells, mut last_t) = (0u64, 0u64, start);
    let mut next = start + Duration::from_secs(1);
    while running() && start.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(50));
        let now = Instant::now();
        if now < next {
            continue;
        }
        next += Duration::from_secs(1);
        let (b, c) = (Live::get(&live.bytes), Live::get(&live.cells));
        let dt = (now - last_t).as_secs_f64().max(1e-9);
        let s = Sample {
            t_s: (now - start).as_secs_f64(),
            mb_per_s: (b - last_bytes) as f64 / dt / 1e6,
            cells_per_s: (c - last_cells) as f64 / dt,
        };
        eprintln!(
            "[{:6.1}s] {:8.2} MB/s {:9.0} cells/s  circuits {:4}  handshakes {:6}  errors {}",
            s.t_s,
            s.mb_per_s,
            s.cells_per_s,
            Live::get(&live.circuits_open),
            Live::get(&live.handshakes),
            Live::get(&live.errors),
        );
        samples.push(s);
        (last_bytes, last_cells, last_t) = (b, c, now);
    }
    samples
}

fn write_svgs(dir: &std::path::Path, s: &Summary) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let pts: Vec<(f64, f64)> = s.timeline.iter().map(|x| (x.t_s, x.mb_per_s)).collect();
    std::fs::write(dir.join("throughput.svg"), svg::throughput(&pts))?;
    let (title, h) = if !s.stats.sendme_rtt_us.is_empty() {
        ("Latency CDF: SENDME round trip", &s.stats.sendme_rtt_us)
    } else {
        ("Latency CDF: gap between DATA cells", &s.stats.cell_gap_us)
    };
    std::fs::write(dir.join("latency-cdf.svg"), svg::latency_cdf(title, h))?;
    Ok(())
}
