//! Command line of `fors-loadgen`: a hand-written parser (no CLI crate, to keep the build lean)
//! with typed errors, and the size/duration syntax shared with the rest of the tool.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use fors::crypto::ids::{Ed25519Identity, RsaIdentity};

/// Largest transfer size accepted per stream (1 TiB): a typo should not mean "forever".
pub const MAX_SIZE: u64 = 1 << 40;
/// Longest `--duration` / `--timeout` accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Bounds on the workload shape.
pub const MAX_CIRCUITS: u32 = 10_000;
pub const MAX_STREAMS: u32 = 200;
pub const MAX_HOPS: usize = 8;
pub const MAX_CREATE_RATE: u32 = 100_000;

/// Which circuit handshake to use (`--handshake`). `Fast` is CREATE_FAST to the first hop;
/// later hops always use ntor because CREATE_FAST cannot be sent in EXTEND2 (tor-spec
/// §"CREATE_FAST/CREATED_FAST cells").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    Ntor,
    NtorV3,
    Fast,
}

/// Which relay crypto to ask the hops for (`--relay-crypto`). `Cgo` asks, in the ntor-v3
/// handshake, every hop that advertises CGO (proposal 359: Relay=6, with Relay=5 and
/// FlowCtrl=2) for it and for congestion control; hops that do not advertise it run tor1.
/// C tor 0.4.9 clients ask only the last hop (CC is only requested of the exit), arti asks
/// every ntor-v3 hop; a benchmark of a CGO *middle* needs the middle asked too, hence every
/// hop that advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayCrypto {
    Tor1,
    Cgo,
}

/// One relay of the path as given on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopArg {
    pub addr: SocketAddrV4,
    pub rsa: RsaIdentity,
    pub ed: Option<Ed25519Identity>,
    /// The relay's ntor onion key, if given inline (`ntor=BASE64`); otherwise it is fetched
    /// from a directory authority.
    pub ntor_key: Option<[u8; 32]>,
}

/// Where streams connect (`--target`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Start the built-in sink/source server on 127.0.0.1.
    Builtin,
    /// A running built-in-protocol server (`HOST:PORT`).
    Sink(SocketAddrV4),
    /// The testnet's HTTP data server (`http://HOST:PORT`).
    Http(SocketAddrV4),
}

/// Where the path comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSource {
    Hops(Vec<HopArg>),
    /// `network.json` of `scripts/testnet.py`, with nicknames (empty = automatic choice).
    Network {
        file: PathBuf,
        path: Vec<String>,
    },
}

/// Everything the command line says.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub path: PathSource,
    /// Directory authority DirPort to fetch ntor keys from (with `--hop`).
    pub dir_server: Option<SocketAddrV4>,
    pub circuits: u32,
    pub streams: u32,
    pub download: Option<u64>,
    pub upload: Option<u64>,
    pub duration: Option<Duration>,
    /// Total target rate in MB/s (10^6 bytes); `None` = as fast as possible.
    pub rate_mbps: Option<f64>,
    pub handshake: HandshakeKind,
    pub relay_crypto: RelayCrypto,
    pub create_rate: Option<u32>,
    pub flood: bool,
    pub target: Target,
    pub json: bool,
    pub svg: Option<PathBuf>,
    pub timeout: Duration,
    pub threads: usize,
    pub seed: u64,
    /// `--serve ADDR`: only run the built-in sink/source server (for `--target` of other runs).
    pub serve: Option<SocketAddrV4>,
    /// `--allow-remote`: addresses outside 127.0.0.0/8 may be used, but only ones named on
    /// the command line (see [`Reach`]).
    pub reach: Reach,
    /// `--sink-listen ADDR`: where the built-in sink/source server listens (default
    /// 127.0.0.1 on a free port). The exit connects to it, so on a rack it is an address of
    /// this host that the exit relay can reach.
    pub sink_listen: Option<SocketAddrV4>,
    /// `--idle-circuits`: hold idle one-hop circuits in stages (see `idle`).
    pub idle: Option<IdlePlan>,
}

// --- `--idle-circuits` (the mode itself is `idle.rs`) ---

/// Most idle circuits one run may hold (a bound, not a goal: the issue asks for 100k).
pub const MAX_IDLE_CIRCUITS: u32 = 200_000;
/// Most stages on one command line.
pub const MAX_IDLE_STAGES: usize = 16;
/// Default circuits created per second (all workers together): well under what one C tor
/// core answers with ntor, so its onion queue (MaxOnionQueueDelay, 1.75 s) never drops one.
pub const DEFAULT_IDLE_RATE: u32 = 500;
/// Default time the circuits are held idle at each stage.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
/// Slack on top of each stage's expected build time (link set-up, descriptor fetch).
const STAGE_SLACK: Duration = Duration::from_secs(60);

/// What `--idle-circuits`, `--idle-rate` and `--settle` ask for.
#[derive(Debug, Clone, PartialEq)]
pub struct IdlePlan {
    /// Cumulative circuit counts, strictly increasing.
    pub stages: Vec<u32>,
    /// Circuits created per second, all workers together.
    pub rate: u32,
    /// Hold time at each stage.
    pub settle: Duration,
}

/// Parses `1000,10000,100k` (`k` = 1000): strictly increasing counts in
/// 1..=[`MAX_IDLE_CIRCUITS`], at most [`MAX_IDLE_STAGES`] of them.
pub fn parse_stages(s: &str) -> Result<Vec<u32>, String> {
    let mut v: Vec<u32> = Vec::new();
    for part in s.split(',') {
        let p = part.trim();
        let (num, mult) = match p.strip_suffix(['k', 'K']) {
            Some(n) => (n, 1000u64),
            None => (p, 1),
        };
        let n = num
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(mult))
            .filter(|&n| (1..=u64::from(MAX_IDLE_CIRCUITS)).contains(&n))
            .ok_or_else(|| format!("{p:?}: a count in 1..={MAX_IDLE_CIRCUITS}"))?
            as u32;
        if v.last().is_some_and(|&last| n <= last) {
            return Err(format!(
                "{s:?}: stages are cumulative counts and must increase"
            ));
        }
        v.push(n);
    }
    if v.len() > MAX_IDLE_STAGES {
        return Err(format!("at most {MAX_IDLE_STAGES} stages"));
    }
    Ok(v)
}

impl IdlePlan {
    /// The longest a stage from `from` to `to` circuits may take: twice the time the rate
    /// needs, plus [`STAGE_SLACK`].
    pub fn stage_limit(&self, from: u32, to: u32) -> Duration {
        let need = f64::from(to.saturating_sub(from)) / f64::from(self.rate.max(1));
        Duration::from_secs_f64(need * 2.0) + STAGE_SLACK
    }

    /// A bound on the whole run: every stage at its limit, every hold, and the close.
    pub fn time_bound(&self) -> Duration {
        let mut prev = 0;
        let mut total = Duration::from_secs(30);
        for &s in &self.stages {
            total += self.stage_limit(prev, s) + self.settle;
            prev = s;
        }
        total
    }
}

/// Which addresses a run may talk to.
///
/// By default only loopback: a load generator pointed at the wrong address floods someone
/// else's relay. `--allow-remote` is the operator's explicit opt-in to drive relays on other
/// hosts of their own network; even then every address must come from this command line
/// (`--hop`, `--dir-server`, `--target`, `--sink-listen`, `--serve`), never from a file or a
/// default, so the run reaches exactly the hosts the operator typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    Loopback,
    Named,
}

/// What was wrong with the command line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("unknown option {0} (see --help)")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{opt}: {why}")]
    Bad { opt: &'static str, why: String },
    #[error("give --hop (at least two) or --network, not both")]
    NoPath,
    #[error(
        "{opt} {addr}: not a loopback address; fors-loadgen only talks to 127.0.0.0/8 \
         unless --allow-remote is given (with every hop named by --hop)"
    )]
    NotLoopback { opt: &'static str, addr: String },
    #[error("{opt} {addr}: an unspecified, multicast or broadcast address cannot be a peer")]
    NotUnicast { opt: &'static str, addr: String },
    #[error("nothing to do: give --download, --upload and/or --create-rate")]
    NoWorkload,
    #[error("help requested")]
    Help,
}

fn bad(opt: &'static str, why: impl Into<String>) -> CliError {
    CliError::Bad {
        opt,
        why: why.into(),
    }
}

/// Parses `50M`, `1G`, `4096`, `64k` (binary multiples: K = 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'B' => 1,
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G, T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 50M"))?;
    let v = n
        .checked_mul(mult)
        .filter(|&v| v <= MAX_SIZE)
        .ok_or_else(|| format!("{s:?} is larger than 1T"))?;
    if v == 0 {
        return Err("size must be positive".into());
    }
    Ok(v)
}

/// Parses `30s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30s"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown duration unit in {s:?} (use ms, s, m, h)")),
    };
    if secs.is_nan() || secs <= 0.0 || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("{s:?} must be between 1ms and 24h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Refuses anything outside 127.0.0.0/8 (and ::1, which we never use for IPv4 hops).
pub fn require_loopback(opt: &'static str, addr: &SocketAddr) -> Result<(), CliError> {
    check_reach(opt, addr, Reach::Loopback)
}

/// Whether `addr`, given as `opt`, may be used under `reach`. Named remote addresses must
/// still be one host: 0.0.0.0, multicast and broadcast are refused whatever the flag.
pub fn check_reach(opt: &'static str, addr: &SocketAddr, reach: Reach) -> Result<(), CliError> {
    let ip = addr.ip();
    if ip.is_loopback() {
        return Ok(());
    }
    if reach == Reach::Loopback {
        return Err(CliError::NotLoopback {
            opt,
            addr: addr.to_string(),
        });
    }
    let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(CliError::NotUnicast {
            opt,
            addr: addr.to_string(),
        });
    }
    Ok(())
}

/// An IPv4 `ADDR:PORT`. Whether it may be used is decided once the whole command line is
/// read (`--allow-remote` may come after it): see [`check_reach`].
fn parse_v4(opt: &'static str, s: &str) -> Result<SocketAddrV4, CliError> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| bad(opt, format!("{s:?} is not IPv4:PORT")))?;
    match a {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err(bad(opt, "only IPv4 addresses are supported")),
    }
}

/// Parses an ed25519 identity in base64 (as C tor prints it) or 64 hex digits.
pub fn parse_ed25519(s: &str) -> Option<Ed25519Identity> {
    if s.len() == 64 {
        if let Some(v) = fors::util::hex::decode(s) {
            return v.try_into().ok().map(Ed25519Identity);
        }
    }
    Ed25519Identity::from_base64(s)
}

/// Decodes a base64 curve25519 key (`ntor-onion-key` form).
pub fn parse_curve25519(s: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    let v = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s.trim().trim_end_matches('='))
        .ok()?;
    v.try_into().ok()
}

/// `127.0.0.1:PORT,RSA_FP[,ED25519_ID][,ntor=BASE64]`.
pub fn parse_hop(s: &str) -> Result<HopArg, CliError> {
    let mut parts = s.split(',');
    let addr = parse_v4("--hop", parts.next().unwrap_or(""))?;
    let fp = parts
        .next()
        .ok_or_else(|| bad("--hop", "missing RSA fingerprint after the address"))?;
    let rsa = RsaIdentity::from_hex(&fp.replace(' ', ""))
        .ok_or_else(|| bad("--hop", format!("{fp:?} is not a 40-hex-digit fingerprint")))?;
    let mut hop = HopArg {
        addr,
        rsa,
        ed: None,
        ntor_key: None,
    };
    for p in parts {
        if let Some(k) = p.strip_prefix("ntor=") {
            hop.ntor_key = Some(
                parse_curve25519(k)
                    .ok_or_else(|| bad("--hop", format!("{k:?} is not a base64 ntor key")))?,
            );
        } else {
            hop.ed = Some(
                parse_ed25519(p)
                    .ok_or_else(|| bad("--hop", format!("{p:?} is not an ed25519 identity")))?,
            );
        }
    }
    Ok(hop)
}

fn parse_target(s: &str) -> Result<Target, CliError> {
    if let Some(rest) = s.strip_prefix("http://") {
        let hostport = rest.trim_end_matches('/');
        return Ok(Target::Http(parse_v4("--target", hostport)?));
    }
    Ok(Target::Sink(parse_v4("--target", s)?))
}

pub const USAGE: &str = "\
fors-loadgen: a Tor client load generator for loopback test networks (or, with
--allow-remote, for relays on other hosts of your own network)

PATH (at least two hops: a middle, then the exit):
  --hop 127.0.0.1:PORT,RSA_FP[,ED25519_ID][,ntor=B64]   repeat per hop, in order
  --dir-server 127.0.0.1:DIRPORT   authority to fetch ntor keys from (for --hop)
  --network run/net/network.json   a scripts/testnet.py network
  --path middle,exit               nicknames from network.json (default: auto)
WORKLOAD:
  --circuits N (1)  --streams M (1, per direction per circuit)
  --download SIZE  --upload SIZE   per stream, e.g. 50M, 1G (K=1024)
  --duration 30s    repeat streams until then (default: each stream once)
  --rate MBPS       total target rate (default: as fast as possible)
  --handshake ntor|ntor-v3|fast   (default ntor)
  --relay-crypto tor1|cgo   (default tor1) cgo: ntor-v3 asking every hop whose
                    descriptor advertises CGO (Relay=6) for CGO and congestion control;
                    relay cell format v1 and 16-byte SENDME tags on those hops
  --create-rate N   circuit-creation workload: N CREATE2 handshakes per second
  --flood           CREATE2 flood while the bulk streams run (needs --create-rate)
  --idle-circuits N1,N2,..  memory workload: hold N1, then N2, ... idle one-hop
                    circuits (cumulative, k = 1000, at most 200k) on the one relay of
                    --path NICK / --hop; prints {\"idle_stage\":..} on stdout when each is
                    answered, holds it --settle (10s), then {\"idle_hold_end\":..}
  --idle-rate R     circuits created per second in that mode (default 500)
  --settle 10s      how long each stage is held idle
  --target HOST:PORT | http://HOST:PORT   a running sink (default: built-in server)
  --sink-listen ADDR:PORT   where the built-in server listens (default 127.0.0.1:0)
  --threads T       worker threads (default: min(cores, circuits))
  --seed S          pattern seed base (default: random)
  --serve 127.0.0.1:PORT   only run the sink/source server (until --duration, default 1h)
REMOTE (a rack of your own):
  --allow-remote    allow addresses outside 127.0.0.0/8; every hop must then be a
                    --hop, and the built-in server needs --sink-listen (an address of
                    this host the exit can reach) unless --target names a sink
OUTPUT:
  --json  --svg DIR  --timeout 120s
MERGE (several load-generator hosts into one report):
  fors-loadgen merge [--relay-cpu-s S] [--json] A.json B.json ...
";

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Options, CliError> {
    let mut hops = Vec::new();
    let mut network = None;
    let mut path_names = Vec::new();
    let mut o = Options {
        path: PathSource::Hops(Vec::new()),
        dir_server: None,
        circuits: 1,
        streams: 1,
        download: None,
        upload: None,
        duration: None,
        rate_mbps: None,
        handshake: HandshakeKind::Ntor,
        relay_crypto: RelayCrypto::Tor1,
        create_rate: None,
        flood: false,
        target: Target::Builtin,
        json: false,
        svg: None,
        timeout: Duration::from_secs(120),
        threads: 0,
        seed: rand::random(),
        serve: None,
        reach: Reach::Loopback,
        sink_listen: None,
        idle: None,
    };
    let (mut idle_stages, mut idle_rate, mut settle) = (None, None, None);
    let mut timeout_given = false;
    let mut handshake_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (a.as_str(), None),
        };
        macro_rules! val {
            ($opt:literal) => {
                match inline.clone() {
                    Some(v) => v,
                    None => it.next().cloned().ok_or(CliError::MissingValue($opt))?,
                }
            };
        }
        match name {
            "-h" | "--help" => return Err(CliError::Help),
            "--hop" => {
                if hops.len() >= MAX_HOPS {
                    return Err(bad("--hop", format!("at most {MAX_HOPS} hops")));
                }
                hops.push(parse_hop(&val!("--hop"))?)
            }
            "--dir-server" => o.dir_server = Some(parse_v4("--dir-server", &val!("--dir-server"))?),
            "--network" => network = Some(PathBuf::from(val!("--network"))),
            "--path" => {
                let v = val!("--path");
                if v != "auto" {
                    path_names = v.split(',').map(str::to_string).collect();
                }
            }
            "--circuits" => {
                o.circuits = val!("--circuits")
                    .parse()
                    .ok()
                    .filter(|&n| (1..=MAX_CIRCUITS).contains(&n))
                    .ok_or_else(|| bad("--circuits", format!("1..={MAX_CIRCUITS}")))?
            }
            "--streams" => {
                o.streams = val!("--streams")
                    .parse()
                    .ok()
                    .filter(|&n| (1..=MAX_STREAMS).contains(&n))
                    .ok_or_else(|| bad("--streams", format!("1..={MAX_STREAMS}")))?
            }
            "--download" => {
                o.download =
                    Some(parse_size(&val!("--download")).map_err(|e| bad("--download", e))?)
            }
            "--upload" => {
                o.upload = Some(parse_size(&val!("--upload")).map_err(|e| bad("--upload", e))?)
            }
            "--duration" => {
                o.duration =
                    Some(parse_duration(&val!("--duration")).map_err(|e| bad("--duration", e))?)
            }
            "--timeout" => {
                o.timeout = parse_duration(&val!("--timeout")).map_err(|e| bad("--timeout", e))?;
                timeout_given = true;
            }
            "--idle-circuits" => {
                idle_stages = Some(
                    parse_stages(&val!("--idle-circuits"))
                        .map_err(|e| bad("--idle-circuits", e))?,
                )
            }
            "--idle-rate" => {
                idle_rate = Some(
                    val!("--idle-rate")
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| (1..=MAX_CREATE_RATE).contains(&n))
                        .ok_or_else(|| bad("--idle-rate", format!("1..={MAX_CREATE_RATE}")))?,
                )
            }
            "--settle" => {
                settle = Some(parse_duration(&val!("--settle")).map_err(|e| bad("--settle", e))?)
            }
            "--rate" => {
                o.rate_mbps = Some(
                    val!("--rate")
                        .parse::<f64>()
                        .ok()
                        .filter(|r| *r > 0.0 && *r <= 1e6)
                        .ok_or_else(|| bad("--rate", "a positive number of MB/s"))?,
                )
            }
            "--handshake" => {
                handshake_given = true;
                o.handshake = match val!("--handshake").as_str() {
                    "ntor" => HandshakeKind::Ntor,
                    "ntor-v3" | "ntor3" => HandshakeKind::NtorV3,
                    "fast" | "create-fast" => HandshakeKind::Fast,
                    other => {
                        return Err(bad(
                            "--handshake",
                            format!("{other:?}: ntor, ntor-v3 or fast"),
                        ))
                    }
                }
            }
            "--relay-crypto" => {
                o.relay_crypto = match val!("--relay-crypto").as_str() {
                    "tor1" => RelayCrypto::Tor1,
                    "cgo" => RelayCrypto::Cgo,
                    other => return Err(bad("--relay-crypto", format!("{other:?}: tor1 or cgo"))),
                }
            }
            "--create-rate" => {
                o.create_rate = Some(
                    val!("--create-rate")
                        .parse()
                        .ok()
                        .filter(|&n| (1..=MAX_CREATE_RATE).contains(&n))
                        .ok_or_else(|| bad("--create-rate", format!("1..={MAX_CREATE_RATE}")))?,
                )
            }
            "--flood" => o.flood = true,
            "--serve" => o.serve = Some(parse_v4("--serve", &val!("--serve"))?),
            "--target" => o.target = parse_target(&val!("--target"))?,
            "--sink-listen" => {
                o.sink_listen = Some(parse_v4("--sink-listen", &val!("--sink-listen"))?)
            }
            "--allow-remote" => o.reach = Reach::Named,
            "--json" => o.json = true,
            "--svg" => o.svg = Some(PathBuf::from(val!("--svg"))),
            "--threads" => {
                o.threads = val!("--threads")
                    .parse()
                    .ok()
                    .filter(|&n| (1..=256).contains(&n))
                    .ok_or_else(|| bad("--threads", "1..=256"))?
            }
            "--seed" => {
                o.seed = val!("--seed")
                    .parse()
                    .map_err(|_| bad("--seed", "an unsigned integer"))?
            }
            other => return Err(CliError::Unknown(other.to_string())),
        }
    }
    check_addresses(&o, &hops, network.is_some())?;
    if o.relay_crypto == RelayCrypto::Cgo {
        // CGO is negotiated in ntor-v3's extensions, on every hop (CREATE_FAST and ntor
        // have none).
        if handshake_given && o.handshake != HandshakeKind::NtorV3 {
            return Err(bad("--relay-crypto", "cgo needs --handshake ntor-v3"));
        }
        o.handshake = HandshakeKind::NtorV3;
    }
    if o.serve.is_some() {
        return Ok(o);
    }
    if let Some(stages) = idle_stages {
        return idle_options(
            o,
            stages,
            idle_rate,
            settle,
            timeout_given,
            network,
            hops,
            path_names,
        );
    }
    if idle_rate.is_some() || settle.is_some() {
        return Err(bad("--idle-rate/--settle", "only with --idle-circuits"));
    }
    o.path = match (network, hops.is_empty()) {
        (Some(file), true) => PathSource::Network {
            file,
            path: path_names,
        },
        (None, false)
            if hops.len() >= 2
                || o.create_rate.is_some() && o.download.is_none() && o.upload.is_none() =>
        {
            PathSource::Hops(hops)
        }
        (None, false) => {
            return Err(bad(
                "--hop",
                "exit streams need at least two hops (middle, exit)",
            ))
        }
        _ => return Err(CliError::NoPath),
    };
    if o.download.is_none() && o.upload.is_none() && o.create_rate.is_none() {
        return Err(CliError::NoWorkload);
    }
    if o.flood && o.create_rate.is_none() {
        o.create_rate = Some(100);
    }
    Ok(o)
}

/// The rest of an `--idle-circuits` command line: one relay, no other workload, and a
/// timeout that covers every stage unless one was given.
#[allow(clippy::too_many_arguments)]
fn idle_options(
    mut o: Options,
    stages: Vec<u32>,
    rate: Option<u32>,
    settle: Option<Duration>,
    timeout_given: bool,
    network: Option<PathBuf>,
    hops: Vec<HopArg>,
    path_names: Vec<String>,
) -> Result<Options, CliError> {
    if o.download.is_some() || o.upload.is_some() || o.create_rate.is_some() || o.flood {
        return Err(bad(
            "--idle-circuits",
            "is a workload of its own: drop --download, --upload, --create-rate and --flood",
        ));
    }
    let one = "builds one-hop circuits to the relay under test: give one --hop, or \
               --network with --path NICK";
    o.path = match (network, hops.len()) {
        (Some(file), 0) if path_names.len() == 1 => PathSource::Network {
            file,
            path: path_names,
        },
        (None, 1) => PathSource::Hops(hops),
        _ => return Err(bad("--idle-circuits", one)),
    };
    let plan = IdlePlan {
        stages,
        rate: rate.unwrap_or(DEFAULT_IDLE_RATE),
        settle: settle.unwrap_or(DEFAULT_SETTLE),
    };
    if !timeout_given {
        o.timeout = plan.time_bound().min(MAX_DURATION);
    }
    o.idle = Some(plan);
    Ok(o)
}

/// Applies [`Reach`] to every address on the command line, and the rules of `--allow-remote`.
fn check_addresses(o: &Options, hops: &[HopArg], network: bool) -> Result<(), CliError> {
    let target = match &o.target {
        Target::Builtin => None,
        Target::Sink(a) | Target::Http(a) => Some(*a),
    };
    let named = hops
        .iter()
        .map(|h| ("--hop", h.addr))
        .chain(o.dir_server.map(|a| ("--dir-server", a)))
        .chain(target.map(|a| ("--target", a)))
        .chain(o.sink_listen.map(|a| ("--sink-listen", a)))
        .chain(o.serve.map(|a| ("--serve", a)));
    for (opt, a) in named {
        check_reach(opt, &SocketAddr::V4(a), o.reach)?;
    }
    if o.sink_listen.is_some() && target.is_some() {
        return Err(bad(
            "--sink-listen",
            "is for the built-in server; --target names another sink",
        ));
    }
    if o.reach == Reach::Named && o.serve.is_none() {
        if network {
            return Err(bad(
                "--allow-remote",
                "every hop must be named with --hop, not read from --network",
            ));
        }
        let bulk = o.download.is_some() || o.upload.is_some();
        if bulk && target.is_none() && o.sink_listen.is_none() {
            return Err(bad(
                "--allow-remote",
                "the exit must reach the built-in server: give --sink-listen ADDR:PORT \
                 (an address of this host) or --target HOST:PORT",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    const FP1: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
    const FP2: &str = "89ABCDEF0123456789ABCDEF0123456789ABCDEF";

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Ok(50 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("7b"), Ok(7));
        assert!(parse_size("0").is_err());
        assert!(parse_size("2T").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("25h").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("NaN").is_err());
    }

    #[test]
    fn hops_and_workload() {
        let o = parse(&args(&format!(
            "--hop 127.0.0.1:5000,{FP1} --hop 127.0.0.1:5001,{FP2},{} --circuits 4 --streams 2 \
             --download 5M --upload=1M --duration 10s --rate 12.5 --handshake ntor-v3 --json",
            "A".repeat(43)
        )))
        .unwrap();
        let PathSource::Hops(h) = &o.path else {
            panic!("hops")
        };
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].addr, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(h[0].rsa.to_hex(), FP1);
        assert!(h[0].ed.is_none() && h[1].ed.is_some());
        assert_eq!((o.circuits, o.streams), (4, 2));
        assert_eq!((o.download, o.upload), (Some(5 << 20), Some(1 << 20)));
        assert_eq!(o.duration, Some(Duration::from_secs(10)));
        assert_eq!(o.rate_mbps, Some(12.5));
        assert_eq!(o.handshake, HandshakeKind::NtorV3);
        assert!(o.json);
        assert_eq!(o.target, Target::Builtin);
    }

    #[test]
    fn refuses_non_loopback() {
        let e = parse(&args(&format!(
            "--hop 10.0.0.1:5000,{FP1} --hop 127.0.0.1:5001,{FP2} --download 1M"
        )));
        assert!(matches!(e, Err(CliError::NotLoopback { .. })));
        let e = parse(&args(&format!(
            "--hop 127.0.0.1:5000,{FP1} --hop 127.0.0.1:5001,{FP2} --download 1M --target 8.8.8.8:80"
        )));
        assert!(matches!(e, Err(CliError::NotLoopback { .. })));
        let e = parse(&args(
            "--network n.json --download 1M --target http://192.168.1.1:80",
        ));
        assert!(matches!(e, Err(CliError::NotLoopback { .. })));
    }

    #[test]
    fn network_path_and_targets() {
        let o = parse(&args(
            "--network run/net/network.json --path m1,e1 --upload 1M --target http://127.0.0.2:8080",
        ))
        .unwrap();
        assert_eq!(
            o.path,
            PathSource::Network {
                file: "run/net/network.json".into(),
                path: vec!["m1".into(), "e1".into()]
            }
        );
        assert_eq!(o.target, Target::Http("127.0.0.2:8080".parse().unwrap()));
        let o = parse(&args(
            "--network n.json --path auto --download 1M --target 127.0.0.1:9",
        ))
        .unwrap();
        assert_eq!(o.target, Target::Sink("127.0.0.1:9".parse().unwrap()));
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&args("--download 1M")), Err(CliError::NoPath));
        assert_eq!(parse(&args("--network n.json")), Err(CliError::NoWorkload));
        assert!(matches!(
            parse(&args(&format!("--hop 127.0.0.1:1,{FP1} --download 1M"))),
            Err(CliError::Bad { opt: "--hop", .. })
        ));
        assert!(matches!(parse(&args("--bogus")), Err(CliError::Unknown(_))));
        assert_eq!(
            parse(&args("--network")),
            Err(CliError::MissingValue("--network"))
        );
        assert!(parse(&args("--network n --download 1M --circuits 0")).is_err());
        assert!(parse(&args("--network n --download 1M --handshake tap")).is_err());
        // --relay-crypto: tor1 by default; cgo implies ntor-v3 and refuses another handshake.
        let o = parse(&args("--network n --download 1M")).unwrap();
        assert_eq!(o.relay_crypto, RelayCrypto::Tor1);
        let o = parse(&args("--network n --download 1M --relay-crypto cgo")).unwrap();
        assert_eq!(
            (o.relay_crypto, o.handshake),
            (RelayCrypto::Cgo, HandshakeKind::NtorV3)
        );
        let o = parse(&args("--network n --download 1M --relay-crypto=tor1")).unwrap();
        assert_eq!(o.relay_crypto, RelayCrypto::Tor1);
        assert!(matches!(
            parse(&args(
                "--network n --download 1M --relay-crypto cgo --handshake ntor"
            )),
            Err(CliError::Bad {
                opt: "--relay-crypto",
                ..
            })
        ));
        assert!(matches!(
            parse(&args("--network n --download 1M --relay-crypto aes")),
            Err(CliError::Bad {
                opt: "--relay-crypto",
                ..
            })
        ));
        assert!(parse(&args("--hop 127.0.0.1:1,XYZ --download 1M")).is_err());
    }

    #[test]
    fn serve_mode_needs_no_path() {
        let o = parse(&args("--serve 127.0.0.1:7000 --duration 5s")).unwrap();
        assert_eq!(o.serve, Some("127.0.0.1:7000".parse().unwrap()));
        assert!(parse(&args("--serve 0.0.0.0:7000")).is_err());
    }

    #[test]
    fn remote_hops_need_allow_remote_and_are_named_in_the_error() {
        let base = format!(
            "--hop 10.200.0.1:9001,{FP1},ntor=AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI \
             --hop 10.200.0.1:9002,{FP2},ntor=AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI \
             --download 1M --sink-listen 10.200.0.2:0"
        );
        let e = parse(&args(&base)).unwrap_err();
        assert_eq!(
            e,
            CliError::NotLoopback {
                opt: "--hop",
                addr: "10.200.0.1:9001".into()
            }
        );
        assert!(e.to_string().contains("10.200.0.1:9001"), "{e}");
        assert!(e.to_string().contains("--allow-remote"), "{e}");
        // The flag may come anywhere on the line.
        let o = parse(&args(&format!("--allow-remote {base}"))).unwrap();
        assert_eq!(o.reach, Reach::Named);
        assert_eq!(o.sink_listen, Some("10.200.0.2:0".parse().unwrap()));
        let PathSource::Hops(h) = &o.path else {
            panic!("hops")
        };
        assert_eq!(h[1].addr, "10.200.0.1:9002".parse().unwrap());
        // Without the flag, a remote sink address alone is refused too, by name.
        let e = parse(&args(&format!(
            "--hop 127.0.0.1:1,{FP1} --hop 127.0.0.1:2,{FP2} --download 1M --sink-listen 192.168.7.9:0"
        )))
        .unwrap_err();
        assert_eq!(
            e,
            CliError::NotLoopback {
                opt: "--sink-listen",
                addr: "192.168.7.9:0".into()
            }
        );
    }

    #[test]
    fn allow_remote_refuses_what_is_not_named_on_the_command_line() {
        let hops = format!("--hop 10.0.0.1:1,{FP1} --hop 10.0.0.2:2,{FP2} --download 1M");
        // The built-in sink must be told where to listen: no default that the exit
        // could not reach (127.0.0.1 is the relay host's own loopback).
        assert!(matches!(
            parse(&args(&format!("--allow-remote {hops}"))),
            Err(CliError::Bad {
                opt: "--allow-remote",
                ..
            })
        ));
        // Relays read from network.json are not named on the command line.
        assert!(matches!(
            parse(&args(
                "--allow-remote --network n.json --download 1M --sink-listen 10.0.0.9:0"
            )),
            Err(CliError::Bad {
                opt: "--allow-remote",
                ..
            })
        ));
        // A CREATE2-only run opens no streams, so it needs no sink.
        assert!(parse(&args(&format!(
            "--allow-remote --hop 10.0.0.1:1,{FP1} --create-rate 50"
        )))
        .is_ok());
        // A sink elsewhere is fine when named.
        let o = parse(&args(&format!(
            "--allow-remote {hops} --target 10.0.0.9:7000 --dir-server 10.0.0.3:80"
        )))
        .unwrap();
        assert_eq!(o.target, Target::Sink("10.0.0.9:7000".parse().unwrap()));
        assert_eq!(o.dir_server, Some("10.0.0.3:80".parse().unwrap()));
        // Wildcard, broadcast and multicast are never one host.
        for a in ["0.0.0.0:0", "255.255.255.255:1", "224.0.0.1:1"] {
            assert!(
                matches!(
                    parse(&args(&format!("--allow-remote {hops} --sink-listen {a}"))),
                    Err(CliError::NotUnicast { .. })
                ),
                "{a}"
            );
        }
        // --sink-listen is the built-in server's; it makes no sense with --target.
        assert!(parse(&args(&format!(
            "--allow-remote {hops} --target 10.0.0.9:7000 --sink-listen 10.0.0.8:0"
        )))
        .is_err());
        // A remote --serve needs the flag too.
        assert!(matches!(
            parse(&args("--serve 10.0.0.9:7000")),
            Err(CliError::NotLoopback { opt: "--serve", .. })
        ));
        assert!(parse(&args("--allow-remote --serve 10.0.0.9:7000")).is_ok());
    }

    #[test]
    fn flood_implies_a_create_rate() {
        let o = parse(&args("--network n --download 1M --flood")).unwrap();
        assert!(o.flood);
        assert_eq!(o.create_rate, Some(100));
    }

    #[test]
    fn idle_circuits_plan() {
        let o = parse(&args(
            "--network n.json --path forsmiddle1 --idle-circuits 1000,10k,100000 \
             --idle-rate 800 --settle 15s --json",
        ))
        .unwrap();
        let p = o.idle.as_ref().unwrap();
        assert_eq!(p.stages, vec![1000, 10_000, 100_000]);
        assert_eq!((p.rate, p.settle), (800, Duration::from_secs(15)));
        assert_eq!(
            o.path,
            PathSource::Network {
                file: "n.json".into(),
                path: vec!["forsmiddle1".into()]
            }
        );
        // No --timeout: the plan's own bound, which covers every stage and hold.
        assert_eq!(o.timeout, p.time_bound());
        assert!(o.timeout > Duration::from_secs(100_000 / 800 + 3 * 15));
        // Defaults; a given --timeout wins; one --hop is a path.
        let o = parse(&args(&format!(
            "--hop 127.0.0.1:5000,{FP1} --idle-circuits 5 --timeout 9s"
        )))
        .unwrap();
        let p = o.idle.unwrap();
        assert_eq!((p.rate, p.settle), (500, Duration::from_secs(10)));
        assert_eq!(o.timeout, Duration::from_secs(9));
    }

    #[test]
    fn idle_circuits_refusals() {
        let bad_opt = |line: &str| match parse(&args(line)) {
            Err(CliError::Bad { opt, .. }) => opt,
            other => panic!("{line}: {other:?}"),
        };
        // One relay only: not the automatic two-hop path, not two hops.
        assert_eq!(bad_opt("--network n --idle-circuits 10"), "--idle-circuits");
        assert_eq!(
            bad_opt("--network n --path a,b --idle-circuits 10"),
            "--idle-circuits"
        );
        assert_eq!(
            bad_opt(&format!(
                "--hop 127.0.0.1:1,{FP1} --hop 127.0.0.1:2,{FP2} --idle-circuits 10"
            )),
            "--idle-circuits"
        );
        // Not mixed with another workload.
        assert_eq!(
            bad_opt("--network n --path a --idle-circuits 10 --download 1M"),
            "--idle-circuits"
        );
        assert_eq!(
            bad_opt("--network n --path a --idle-circuits 10 --create-rate 5"),
            "--idle-circuits"
        );
        // Its own options need it; bad values name the option.
        assert_eq!(
            bad_opt("--network n --download 1M --settle 5s"),
            "--idle-rate/--settle"
        );
        assert_eq!(
            bad_opt("--network n --path a --idle-circuits 10 --idle-rate 0"),
            "--idle-rate"
        );
        assert_eq!(
            bad_opt("--network n --path a --idle-circuits 10,5"),
            "--idle-circuits"
        );
        assert_eq!(
            bad_opt("--network n --path a --idle-circuits 300k"),
            "--idle-circuits"
        );
        // Loopback still applies.
        assert!(matches!(
            parse(&args(&format!("--hop 10.0.0.1:1,{FP1} --idle-circuits 10"))),
            Err(CliError::NotLoopback { .. })
        ));
    }

    #[test]
    fn stages_parse_and_must_increase() {
        assert_eq!(
            parse_stages("1000,10000,100k"),
            Ok(vec![1000, 10_000, 100_000])
        );
        assert_eq!(parse_stages("5"), Ok(vec![5]));
        assert_eq!(parse_stages(" 1k , 2K"), Ok(vec![1000, 2000]));
        assert!(parse_stages("10,10").is_err());
        assert!(parse_stages("10,5").is_err());
        assert!(parse_stages("0").is_err());
        assert!(parse_stages("").is_err());
        assert!(parse_stages("1,,2").is_err());
        assert!(parse_stages("200001").is_err());
        assert_eq!(parse_stages("200k"), Ok(vec![200_000]));
        assert!(parse_stages("201k").is_err());
        assert!(parse_stages("-1").is_err());
        assert!(parse_stages("99999999999999999999k").is_err());
        let many: Vec<String> = (1..=17).map(|i| i.to_string()).collect();
        assert!(parse_stages(&many.join(",")).is_err());
        assert!(parse_stages(&many[..16].join(",")).is_ok());
    }

    #[test]
    fn time_bound_covers_every_stage_and_hold() {
        let p = IdlePlan {
            stages: vec![1000, 10_000],
            rate: 1000,
            settle: Duration::from_secs(10),
        };
        // 1000 at 1000/s: 2 s + 60 s slack; 9000: 18 s + 60 s.
        assert_eq!(p.stage_limit(0, 1000), Duration::from_secs(62));
        assert_eq!(p.stage_limit(1000, 10_000), Duration::from_secs(78));
        assert_eq!(p.time_bound(), Duration::from_secs(30 + 62 + 10 + 78 + 10));
    }
}
